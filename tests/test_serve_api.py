"""``lyre serve``'s JSON API against ``lyre search`` and ``lyre eval`` on the sample: a served query's hits
are the lines ``lyre search`` writes for it with the same settings (ids, order, the very scores), under
any concurrency; the side ranks are the ranks in each side's own run; the comparison page's numbers are
``lyre eval --per-query``'s. Bad requests get one JSON line, never a traceback.

The servers run in this process (:func:`serve_fixtures.serving`: the start ``lyre serve`` makes, uvicorn in
a thread, a free port) and are asked over real HTTP; the command itself is run in ``test_serve_cli.py``.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from helpers import LyreCli
from lyre.retrieval.options import RerankOptions
from lyre.serve.options import RunViewOptions, ServerOptions
from serve_fixtures import hit_lines, run_lines, sample_queries, serve_settings, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> Path:
    index = tmp_path_factory.mktemp("serve-bm25") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only")
    return index


@pytest.fixture(scope="module")
def dense_index(
    tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path, tiny_bert: Path
) -> Path:
    index = tmp_path_factory.mktemp("serve-dense") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--embed-model", tiny_bert)
    return index


def search_run(lyre: LyreCli, index: Path, sample: Path, out: Path, *flags: str | Path) -> Path:
    """``lyre search`` of the sample's queries, uncached, with ``flags``."""
    lyre(
        "-q",
        "search",
        "--index",
        index,
        "--queries",
        sample / "queries.tsv",
        "--no-cache",
        "--out",
        out,
        *flags,
    )
    return out


def search_path(text: str, **settings: Any) -> str:
    return "/api/search?" + urlencode({"q": text, **settings})


def assert_served_like_run(served: Any, run: Path, queries: dict[str, str], **settings: Any) -> None:
    """Every query, asked alone, gets the lines ``run`` holds for it."""
    expected = run_lines(run)
    for qid, text in queries.items():
        status, answer = served.get(search_path(text, **settings))
        assert status == 200, answer
        assert hit_lines(answer["hits"]) == expected.get(qid, []), qid


def test_bm25_hits_are_the_lines_lyre_search_writes(
    bm25_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    run = search_run(
        lyre, bm25_index, sample, tmp_path / "bm25.run", "--mode", "bm25", "--rerank-depth", "0", "--k", "20"
    )
    queries = sample_queries(sample)
    for cache in (False, True):  # with the cache, the index's SQLite file is used from the batching thread
        with serving(bm25_index, serve_settings("bm25", cache=cache)) as served:
            assert_served_like_run(served, run, queries, k=20)
            assert_served_like_run(served, run, queries, k=20)  # the second time, from the cache if on
            _, answer = served.get(search_path(queries["Q01"], k=20))
            assert answer["settings"] == {"k": 20, "mode": "bm25", "rerank_depth": 0, "tag": "lyre.bm25"}


def test_dense_bm25_and_hybrid_hits_from_one_server_are_lyre_search_s(
    dense_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    runs = {
        mode: search_run(
            lyre,
            dense_index,
            sample,
            tmp_path / f"{mode}.run",
            "--mode",
            mode,
            "--rerank-depth",
            "0",
            "--k",
            "15",
        )
        for mode in ("bm25", "dense", "hybrid")
    }
    queries = sample_queries(sample)
    with serving(dense_index, serve_settings("hybrid")) as served:
        for mode, run in runs.items():
            assert_served_like_run(served, run, queries, k=15, mode=mode)


def test_fusion_settings_of_the_server_apply_to_every_request(
    dense_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    flags = ("--fusion", "linear", "--weight", "0.3", "--depth", "40")
    run = search_run(
        lyre, dense_index, sample, tmp_path / "linear.run", "--rerank-depth", "0", "--k", "10", *flags
    )
    settings = serve_settings()
    settings = replace(
        settings, options=replace(settings.options, fusion="linear", weight=0.3, depth=40, k=40)
    )
    with serving(dense_index, settings) as served:
        assert_served_like_run(served, run, sample_queries(sample), k=10)


def test_side_ranks_are_ranks_in_the_runs_of_each_side(
    dense_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    sides = {
        side: run_lines(
            search_run(
                lyre, dense_index, sample, tmp_path / f"{side}.run", "--mode", side, "--rerank-depth", "0"
            )
        )
        for side in ("bm25", "dense")
    }  # k = depth = 1000: each side's whole list, as the fusion read it
    queries = sample_queries(sample)
    with serving(dense_index, serve_settings("hybrid")) as served:
        for qid, text in queries.items():
            _, answer = served.get(search_path(text, k=30))
            for side, lines in sides.items():
                rank_of = {docid: rank for rank, docid, _ in lines.get(qid, [])}
                assert [hit[f"{side}_rank"] for hit in answer["hits"]] == [
                    rank_of.get(hit["docid"]) for hit in answer["hits"]
                ], (qid, side)
            _, alone = served.get(search_path(text, k=30, mode="bm25"))
            assert all(hit["dense_rank"] is None for hit in alone["hits"])
            assert [hit["bm25_rank"] for hit in alone["hits"]] == [hit["rank"] for hit in alone["hits"]]


def test_reranked_hits_are_lyre_search_s_at_every_depth_asked(
    bm25_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path, qwen_reranker_folder: Path
) -> None:
    model = ("--rerank-model", qwen_reranker_folder, "--mode", "bm25", "--k", "8")
    runs = {
        depth: search_run(
            lyre, bm25_index, sample, tmp_path / f"r{depth}.run", *model, "--rerank-depth", str(depth)
        )
        for depth in (0, 3, 6)
    }
    rerank = RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=6)
    with serving(bm25_index, serve_settings("bm25", rerank=rerank)) as served:
        _, health = served.get("/api/health")
        assert health["max_rerank_depth"] == 6 and health["defaults"]["rerank_depth"] == 6
        for depth, run in runs.items():
            assert_served_like_run(served, run, sample_queries(sample), k=8, rerank_depth=depth)
        status, answer = served.get(search_path("bread", k=8, rerank_depth=7))
        assert status == 400 and "rerank_depth 7" in answer["error"]


def test_a_batch_request_answers_what_single_requests_answer(bm25_index: Path, sample: Path) -> None:
    queries = sample_queries(sample)
    with serving(bm25_index, serve_settings("bm25")) as served:
        asked = [
            text if i % 2 else {"text": text, "qid": qid} for i, (qid, text) in enumerate(queries.items())
        ]
        status, answer = served.post("/api/search", {"queries": asked, "k": 7})
        assert status == 200, answer
        assert answer["settings"]["k"] == 7 and len(answer["results"]) == len(queries)
        for (qid, text), result, item in zip(queries.items(), answer["results"], asked, strict=True):
            _, alone = served.get(search_path(text, k=7))
            assert result["query"] == text and result["qid"] == (None if isinstance(item, str) else qid)
            assert result["hits"] == alone["hits"]


def test_a_query_id_is_dropped_from_its_hits_with_remove_query_id(
    bm25_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "queries.tsv"
    queries.write_text("D001\tbread kneading gluten\n", encoding="utf-8")  # a query named like a document
    run = tmp_path / "removed.run"
    lyre(
        "-q",
        "search",
        "--index",
        bm25_index,
        "--queries",
        queries,
        "--out",
        run,
        "--mode",
        "bm25",
        "--rerank-depth",
        "0",
        "--k",
        "5",
        "--remove-query-id",
        "--no-cache",
    )
    settings = serve_settings("bm25")
    settings = replace(settings, options=replace(settings.options, remove_query_id=True))
    with serving(bm25_index, settings) as served:
        _, named = served.get(search_path("bread kneading gluten", k=5, qid="D001"))
        _, anonymous = served.get(search_path("bread kneading gluten", k=5))
    assert hit_lines(named["hits"]) == run_lines(run)["D001"]
    assert "D001" not in [hit["docid"] for hit in named["hits"]]
    assert anonymous["hits"][0]["docid"] == "D001"  # without an id, no document is the query's own


def test_32_concurrent_clients_each_get_their_own_query_s_hits(
    dense_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    modes = ("bm25", "dense", "hybrid")
    runs = {
        mode: run_lines(
            search_run(
                lyre,
                dense_index,
                sample,
                tmp_path / f"{mode}.run",
                "--mode",
                mode,
                "--rerank-depth",
                "0",
                "--k",
                "10",
            )
        )
        for mode in modes
    }
    queries = list(sample_queries(sample).items())
    settings = serve_settings("hybrid", server=ServerOptions(port=0, batch_window_ms=5, batch_size=16))

    def client(number: int) -> list[str]:
        wrong = []
        for turn in range(20):
            qid, text = queries[(number * 7 + turn) % len(queries)]
            mode = modes[(number + turn) % len(modes)]
            status, answer = served.get(search_path(text, k=10, mode=mode))
            if status != 200 or hit_lines(answer["hits"]) != runs[mode].get(qid, []):
                wrong.append(f"client {number} turn {turn} query {qid} {mode}: {status}")
        return wrong

    with serving(dense_index, settings) as served, ThreadPoolExecutor(32) as pool:
        wrong = [problem for problems in pool.map(client, range(32)) for problem in problems]
        batcher = served.service.batcher
    assert not wrong, f"{len(wrong)} of 640 answers differ from lyre search, e.g. {wrong[:3]}"
    assert 1 < batcher.largest <= 16  # queries of concurrent requests were searched together, within bounds


def test_a_query_searched_alone_is_lyre_search_of_that_query_alone(
    dense_index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    """The same plan, whatever the batching: one query asked alone is a one-query ``lyre search``."""
    qid, text = next(iter(sample_queries(sample).items()))
    alone = tmp_path / "alone.tsv"
    alone.write_text(f"{qid}\t{text}\n", encoding="utf-8")
    runs = {}
    for mode in ("dense", "hybrid"):
        runs[mode] = tmp_path / f"{mode}.run"
        lyre(
            "-q",
            "search",
            "--index",
            dense_index,
            "--queries",
            alone,
            "--no-cache",
            "--out",
            runs[mode],
            "--mode",
            mode,
            "--rerank-depth",
            "0",
            "--k",
            "10",
            "--fusion",
            "linear",
        )
    settings = serve_settings("hybrid")
    settings = replace(settings, options=replace(settings.options, fusion="linear"))
    with serving(dense_index, settings) as served:
        for mode, run in runs.items():
            _, answer = served.get(search_path(text, k=10, mode=mode))
            assert hit_lines(answer["hits"]) == run_lines(run)[qid], mode


def test_documents_are_served_with_the_query_terms_marked(bm25_index: Path, sample: Path) -> None:
    corpus = {doc["_id"]: doc for doc in map(json.loads, (sample / "corpus.jsonl").read_text().splitlines())}
    with serving(bm25_index, serve_settings("bm25")) as served:
        status, document = served.get("/api/doc/D001?" + urlencode({"q": "proteins of bread"}))
        assert status == 200
        assert (document["docid"], document["title"], document["text"]) == (
            "D001",
            corpus["D001"]["title"],
            corpus["D001"]["text"],
        )
        marked = {document["text"][start:end].lower() for start, end in document["highlights"]}
        assert "proteins" in marked  # a stemmed match: the query says "proteins", the index "protein"
        assert marked <= {"protein", "proteins", "bread", "breads"}  # and "of", a stopword, is not marked
        status, missing = served.get("/api/doc/" + quote("no such doc"))
        assert status == 404 and missing == {"error": "document 'no such doc' is not in the index"}


def test_snippets_hold_the_query_terms_and_titles_are_the_corpus_s(bm25_index: Path, sample: Path) -> None:
    corpus = {doc["_id"]: doc for doc in map(json.loads, (sample / "corpus.jsonl").read_text().splitlines())}
    with serving(bm25_index, serve_settings("bm25")) as served:
        _, answer = served.get(search_path("kneading gluten", k=5))
    for hit in answer["hits"]:
        assert hit["title"] == corpus[hit["docid"]]["title"]
        words = [hit["snippet"][start:end].lower() for start, end in hit["highlights"]]
        assert words and set(words) <= {"kneading", "knead", "kneaded", "gluten"}
        assert hit["snippet"].strip(". ") in corpus[hit["docid"]]["text"]


@pytest.fixture(scope="module")
def compared(
    bm25_index: Path, lyre: LyreCli, sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compared")
    flags = ("--mode", "bm25", "--rerank-depth", "0")
    return {
        "deep": search_run(lyre, bm25_index, sample, folder / "deep.run", *flags, "--k", "30"),
        "shallow": search_run(lyre, bm25_index, sample, folder / "shallow.run", *flags, "--k", "3"),
    }


def test_per_query_values_are_lyre_eval_per_query_s(
    bm25_index: Path, lyre: LyreCli, sample: Path, compared: dict[str, Path]
) -> None:
    runs = list(compared.values())
    table = json.loads(lyre("eval", sample / "qrels.tsv", *runs, "--per-query", "--json").stdout)
    options = RunViewOptions(runs=runs, qrels=sample / "qrels.tsv", queries=sample / "queries.tsv")
    with serving(bm25_index, serve_settings("bm25", runs=options)) as served:
        status, summary = served.get("/api/runs")
    assert status == 200
    assert summary["runs"] == [str(run) for run in runs] and summary["measures"] == table["measures"]
    assert summary["means"] == table["means"]
    texts = sample_queries(sample)
    assert [query["qid"] for query in summary["queries"]] == list(table["per_query"][str(runs[0])])
    for query in summary["queries"]:
        assert query["text"] == texts[query["qid"]]
        for run in summary["runs"]:
            assert query["values"][run] == {
                m: table["per_query"][run][query["qid"]].get(m, 0.0) for m in table["measures"]
            }


def test_two_rankings_side_by_side_carry_grades_and_the_other_rank(
    bm25_index: Path, sample: Path, compared: dict[str, Path]
) -> None:
    from lyre.formats.qrels import qrels_dict, read_qrels

    qrels = qrels_dict(read_qrels(sample / "qrels.tsv"))
    deep, shallow = str(compared["deep"]), str(compared["shallow"])
    options = RunViewOptions(
        runs=[compared["deep"], compared["shallow"]], qrels=sample / "qrels.tsv", compare_depth=10
    )
    lines = {name: run_lines(Path(name)) for name in (deep, shallow)}
    with serving(bm25_index, serve_settings("bm25", runs=options)) as served:
        for qid in qrels:
            status, answer = served.get("/api/compare?" + urlencode({"qid": qid, "a": deep, "b": shallow}))
            assert status == 200, answer
            for side, own, other in (("first", deep, shallow), ("second", shallow, deep)):
                ranking = answer[side]["ranking"]
                assert [(e["rank"], e["docid"]) for e in ranking] == [
                    (r, d) for r, d, _ in lines[own].get(qid, [])[:10]
                ]
                other_rank = {docid: rank for rank, docid, _ in lines[other].get(qid, [])}
                for entry in ranking:
                    assert entry["grade"] == qrels[qid].get(entry["docid"])
                    assert entry["other_rank"] == other_rank.get(entry["docid"])
                    assert entry["in_index"] and entry["title"] is not None
            assert answer["judged"] == len(qrels[qid])
        status, unknown = served.get(
            "/api/compare?" + urlencode({"qid": "Q01", "a": deep, "b": "/etc/passwd"})
        )
        assert status == 404 and "'/etc/passwd' is not one of the runs" in unknown["error"]


BAD_REQUESTS = [
    ("/api/search?q=bread&k=0", 400, "k 0: must be between 1 and 120"),  # k is capped at the 120 documents
    ("/api/search?q=bread&k=121", 400, "k 121: must be between 1 and 120"),
    ("/api/search?q=bread&k=ten", 422, "k: Input should be a valid integer"),
    ("/api/search?q=bread&mode=sparse", 400, "mode sparse: is not known; use one of bm25, dense, hybrid"),
    ("/api/search?q=bread&mode=dense", 400, "mode dense: needs parts this server did not load"),
    (
        "/api/search?q=bread&rerank_depth=5",
        400,
        "rerank_depth 5: asks for a reranker this server did not load",
    ),
    ("/api/search?q=bread&rerank_depth=-1", 400, "rerank_depth -1: must be between 0 and 0"),
    ("/api/search?q=%20%20", 400, "q '  ': is empty"),
    ("/api/search?q=" + "a" * 2001, 400, "q of 2,001 characters: is longer than 2,000"),
    ("/api/search", 422, "q: Field required"),
    ("/api/search?q=bread&qid=", 400, "qid '': must be non-empty"),
    ("/api/doc/D999", 404, "document 'D999' is not in the index"),
    ("/api/runs", 404, "this server compares no runs"),
    ("/api/compare?qid=Q01&a=x&b=y", 404, "this server compares no runs"),
    ("/api/nothing", 404, "Not Found"),
    ("/static/../pyproject.toml", 404, "Not Found"),
]


@pytest.fixture(scope="module")
def bm25_server(bm25_index: Path) -> Any:
    with serving(
        bm25_index, serve_settings("bm25", server=ServerOptions(port=0, max_queries=5, max_request_kb=4))
    ) as served:
        yield served


def assert_one_line_error(answer: Any, fragment: str) -> None:
    assert isinstance(answer, dict) and list(answer) == ["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert fragment in answer["error"], answer["error"]


@pytest.mark.parametrize(("path", "status", "fragment"), BAD_REQUESTS)
def test_a_bad_get_gets_its_status_and_one_json_line(
    bm25_server: Any, path: str, status: int, fragment: str
) -> None:
    got, answer = bm25_server.get(path)
    assert got == status
    assert_one_line_error(answer, fragment)


BAD_BODIES = [
    ({"queries": []}, 400, "queries 0: give at least one query"),
    ({"queries": ["a"] * 6}, 400, "queries 6: must be at most 5 per request"),
    ({"queries": ["bread"], "k": "many"}, 422, "k: Input should be a valid integer"),
    ({"queries": ["bread"], "path": "/etc/passwd"}, 422, "path: Extra inputs are not permitted"),
    ({"queries": [{"text": "bread", "file": "x"}]}, 422, "Extra inputs are not permitted"),
    ({"query": "bread"}, 422, "queries: Field required"),
    (["bread"], 422, "Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD_BODIES)
def test_a_bad_batch_gets_its_status_and_one_json_line(
    bm25_server: Any, body: Any, status: int, fragment: str
) -> None:
    got, answer = bm25_server.post("/api/search", body)
    assert got == status
    assert_one_line_error(answer, fragment)


def test_bodies_over_the_limit_and_broken_json_are_refused(bm25_server: Any) -> None:
    got, answer = bm25_server.post(
        "/api/search", None, raw=json.dumps({"queries": ["word " * 1000]}).encode()
    )
    assert got == 413
    assert_one_line_error(answer, "request body over 4.0 KiB")
    got, answer = bm25_server.post("/api/search", None, raw=b'{"queries": ["bread"')
    assert got == 422
    assert_one_line_error(answer, "JSON decode error")
    got, answer = bm25_server.get("/api/health")
    assert got == 200 and answer["status"] == "ok"


def test_a_failure_inside_the_server_is_a_one_line_500_and_serving_goes_on(
    bm25_index: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(bm25_index, index)
    with serving(index, serve_settings("bm25")) as served:
        for part in (index / "docstore").glob("part-*.parquet"):
            part.unlink()  # a resource failing under a running server (the docstore's rows are read lazily)
        status, answer = served.get("/api/doc/D001")
        assert status == 500
        assert answer == {"error": "internal error; the server's log has the details"}
        assert served.get("/api/health")[0] == 200


def test_the_schema_lists_every_endpoint_and_answers_match_it(bm25_server: Any) -> None:
    from lyre.serve.app import BatchAnswer, DocumentAnswer, SearchAnswer

    status, schema = bm25_server.get("/openapi.json")
    assert status == 200
    assert {"/api/search", "/api/doc/{docid}", "/api/health", "/api/runs", "/api/compare"} <= set(
        schema["paths"]
    )
    assert set(schema["paths"]["/api/search"]) == {"get", "post"}
    names = [
        parameter["name"]
        for path in schema["paths"].values()
        for operation in path.values()
        for parameter in operation.get("parameters", [])
    ]
    assert names and not [name for name in names if "path" in name or "file" in name]  # none names a file
    SearchAnswer.model_validate(bm25_server.get(search_path("bread", k=3))[1])
    BatchAnswer.model_validate(bm25_server.post("/api/search", {"queries": ["bread", "moon"]})[1])
    DocumentAnswer.model_validate(bm25_server.get("/api/doc/D001")[1])
