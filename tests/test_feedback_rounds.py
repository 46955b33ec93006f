"""BM25 feedback through the search plan, checked by hand on a small real index.

The corpus: five documents of a few distinct words (``T1`` "cat cat fish", ``T2`` "cat bird owl", ``T3``
"fish eel", ``T4`` "bird eel", ``T5`` "dog") and twenty fillers ("lorem ipsum dolor"). Five documents
alone would leave RM3 and Rocchio nothing: Anserini drops feedback terms held by more than 10% of the
documents, which in a five-document corpus is every term; with 25 documents each topical word (held by
at most two) stays. The first-stage scores the methods weigh by are read from a plain BM25 search of the
same index, and every expected weight is the method's formula written out on these documents.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import LyreCli, one_line_error
from lyre.basics.errors import LyreError, OptionError
from lyre.formats.queries import read_queries
from lyre.formats.records import Query
from lyre.formats.runs import ranked_columns
from lyre.indexes.manifest import load_manifest, record_stage
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan

OFF = RerankOptions(rerank_depth=0)
TOLERANCE = 1e-9
TOPICAL = {"T1": "cat cat fish", "T2": "cat bird owl", "T3": "fish eel", "T4": "bird eel", "T5": "dog"}
QUERIES = [Query("cat", "cat"), Query("catfish", "cat fish"), Query("zebra", "zebra"), Query("stop", "the")]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> Path:
    folder = tmp_path_factory.mktemp("feedback")
    documents = [*TOPICAL.items(), *((f"F{i:02d}", "lorem ipsum dolor") for i in range(20))]
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in documents))
    lyre("-q", "index", corpus, "--out", folder / "index", "--bm25-only")
    return folder / "index"


def search(index: Path, queries: list[Query], **settings: object) -> tuple[dict, SearchPlan]:
    plan = SearchPlan.open(index, SearchOptions(mode="bm25", k=25, depth=25, **settings), OFF)
    return plan.search(queries), plan


def first_stage(index: Path, text: str) -> dict[str, float]:
    return search(index, [Query("q", text)])[0]["q"]


def expansion(index: Path, query: Query, **settings: object) -> dict[str, float]:
    _, plan = search(index, [query], **settings)
    record = plan.feedback_record([query])
    assert record is not None
    return record["bm25"]["expansions"][query.qid]


def assert_weights(found: dict[str, float], expected: dict[str, float]) -> None:
    assert set(found) == set(expected)
    for term, weight in expected.items():
        assert found[term] == pytest.approx(weight, abs=TOLERANCE), term


def test_rm3_weighs_the_two_hits_by_their_bm25_scores(index: Path) -> None:
    """``--prf-docs`` 10 (Anserini's default) over two hits: both are read, no error."""
    scores = first_stage(index, "cat")
    assert set(scores) == {"T1", "T2"}
    s1, s2 = scores["T1"], scores["T2"]
    # T1 {cat 2, fish 1}, |T1| = 3; T2 {cat 1, bird 1, owl 1}, |T2| = 3; rm's L1 norm: s1 + s2.
    rm = {"cat": 2 / 3 * s1 + 1 / 3 * s2, "fish": 1 / 3 * s1, "bird": 1 / 3 * s2, "owl": 1 / 3 * s2}
    expected = {term: 0.5 * weight / (s1 + s2) for term, weight in rm.items()}
    expected["cat"] += 0.5 * 1.0
    assert_weights(expansion(index, QUERIES[0], prf="rm3"), expected)


def test_rocchio_moves_the_unit_query_toward_the_mean_unit_document(index: Path) -> None:
    mean = {
        "cat": (2 / math.sqrt(5) + 1 / math.sqrt(3)) / 2,
        "fish": 1 / math.sqrt(5) / 2,
        "bird": 1 / math.sqrt(3) / 2,
        "owl": 1 / math.sqrt(3) / 2,
    }
    norm = math.sqrt(sum(weight**2 for weight in mean.values()))
    expected = {term: 0.75 * weight / norm for term, weight in mean.items()}
    expected["cat"] += 1.0
    assert_weights(expansion(index, QUERIES[0], prf="rocchio"), expected)


def test_bo1_keeps_the_terms_two_of_the_three_documents_share(index: Path) -> None:
    """Terrier's three feedback documents for "cat fish" are T1, T2 and T3; cat (3 times in the
    collection, all in them) and fish (twice) are each in two of them, bird, owl and eel in one."""

    def bose_einstein(within: int, frequency: int) -> float:
        p = frequency / 25
        return within * math.log2((1 + p) / p) + math.log2(1 + p)

    assert set(first_stage(index, "cat fish")) == {"T1", "T2", "T3"}
    normaliser = bose_einstein(3, 3)  # cat, the heaviest: 3 occurrences in the feedback documents
    expected = {"cat": 1.0 + bose_einstein(3, 3) / normaliser, "fish": 1.0 + bose_einstein(2, 2) / normaliser}
    assert_weights(expansion(index, QUERIES[1], prf="bo1"), expected)


@pytest.mark.parametrize("method", ["rm3", "rocchio", "bo1"])
def test_the_second_search_scores_the_weighted_terms_with_the_same_bm25(index: Path, method: str) -> None:
    expanded = expansion(index, QUERIES[1], prf=method)
    run, _ = search(index, [QUERIES[1]], prf=method)
    per_term = {term: first_stage(index, term) for term in expanded}
    expected = {}
    for term, weight in expanded.items():
        for docid, score in per_term[term].items():
            expected[docid] = expected.get(docid, 0.0) + weight * score
    assert set(run["catfish"]) == set(expected)
    for docid, score in expected.items():
        assert run["catfish"][docid] == pytest.approx(score, rel=1e-6)


@pytest.mark.parametrize("method", ["rm3", "rocchio", "bo1"])
def test_queries_without_a_hit_or_a_term_get_no_feedback_and_no_hit(index: Path, method: str) -> None:
    run, plan = search(index, QUERIES[2:], prf=method)
    assert run == {"zebra": {}, "stop": {}}
    record = plan.feedback_record(QUERIES[2:])
    assert record is not None
    expansions = record["bm25"]["expansions"]
    assert list(expansions["zebra"]) == ["zebra"]  # the query alone: no feedback document to read
    assert expansions["stop"] == {}  # no term at all


def test_feedback_settings_and_expansions_go_to_the_sidecar(
    index: Path, lyre: LyreCli, tmp_path: Path
) -> None:
    queries = tmp_path / "queries.tsv"
    queries.write_text("".join(f"{q.qid}\t{q.text}\n" for q in QUERIES))
    out = tmp_path / "rm3.run"
    lyre("-q", "search", "--index", index, "--queries", queries, "--mode", "bm25", "--prf", "rm3",
         "--prf-terms", "3", "--rerank-depth", "0", "--out", out)  # fmt: skip
    feedback = json.loads((tmp_path / "rm3.run.meta.json").read_text())["feedback"]
    assert feedback["bm25"]["method"] == "rm3"
    assert {key: feedback["bm25"][key] for key in ("prf_docs", "prf_terms", "prf_weight")} == {
        "prf_docs": 10, "prf_terms": 3, "prf_weight": 0.5,
    }  # fmt: skip
    assert feedback["bm25"]["expansions"]["cat"] == expansion(index, QUERIES[0], prf="rm3", prf_terms=3)
    assert "dense" not in feedback


def test_feedback_on_a_side_the_mode_does_not_search_is_one_line(
    index: Path, lyre: LyreCli, tmp_path: Path
) -> None:
    queries = tmp_path / "queries.tsv"
    queries.write_text("q\tcat\n")
    result = lyre("-q", "search", "--index", index, "--queries", queries, "--mode", "bm25", "--dense-prf",
                  "rocchio", "--out", tmp_path / "run", check=False)  # fmt: skip
    one_line_error(result, "--dense-prf rocchio", "--mode bm25")
    assert not (tmp_path / "run").exists()


def test_feedback_settings_are_checked_before_anything_is_opened(index: Path) -> None:
    cases = [
        ({"prf": "rm3", "prf_weight": 1.5}, "prf_weight 1.5: must be at most 1 for rm3 feedback"),
        (
            {"prf": "rocchio", "prf_weight": 0.0, "rocchio_beta": 0.0},
            "with rocchio_beta 0 leaves no query to search",
        ),
        ({"prf": "rm3", "prf_docs": 0}, "prf_docs 0: must be at least 1"),
        ({"prf": "bm25x"}, "prf bm25x: is not known; use one of none, rm3, rocchio, bo1"),
        ({"mode": "dense", "prf": "bo1"}, "which mode dense does not search"),
        (
            {"dense_prf": "rocchio", "dense_prf_alpha": 0.0, "dense_prf_beta": 0.0},
            "with dense_prf_beta 0 leaves no query",
        ),
    ]
    for settings, message in cases:
        options = SearchOptions(**{"mode": "hybrid", **settings})  # type: ignore[arg-type]
        with pytest.raises(OptionError, match=message):
            SearchPlan.open(index / "missing", options, OFF)  # refused before the folder is looked at


def test_bo1_on_an_index_built_before_collection_frequencies_names_the_fix(
    index: Path, tmp_path: Path
) -> None:
    """A format-1 BM25 folder (its record without a format) searches, but cannot feed Bo1."""
    old = tmp_path / "old"
    shutil.copytree(index, old)
    manifest = load_manifest(old)
    record = manifest.stages["bm25"]
    params = {key: value for key, value in record.params.items() if key != "format"}
    record_stage(old, "bm25", replace(record, params=params))
    with pytest.raises(LyreError, match="before lyre kept collection term frequencies, which prf bo1 needs"):
        search(old, QUERIES[:1], prf="bo1")
    assert search(old, QUERIES[:1], prf="rm3")[0]["cat"]  # the other methods still work


@pytest.mark.slow
def test_without_feedback_the_sample_run_is_the_one_lyre_wrote_before_feedback(
    tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path
) -> None:
    """The sample's BM25 run at commit 05a5747 (before feedback existed), its five TREC columns hashed:
    ``--prf none`` (the default) must not change a byte of it."""
    index = tmp_path_factory.mktemp("sample") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only")
    queries = read_queries(sample / "queries.tsv")
    run = SearchPlan.open(index, SearchOptions(mode="bm25", prf="none"), OFF).search(queries)
    lines = []
    for qid, documents in run.items():
        docids, scores = ranked_columns(documents)
        lines += [
            f"{qid} Q0 {d} {rank} {s!r}\n" for rank, (d, s) in enumerate(zip(docids, scores, strict=True), 1)
        ]
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert digest == "99a392cceed4ac27034ffb4168f91a7000c1a341486378c157000146197e274c"
