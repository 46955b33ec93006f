"""The `lyre` command line as a user runs it: real subprocesses, real exit codes, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import one_line_error
from lyre.formats.runs import rank_order, read_run

if TYPE_CHECKING:
    from helpers import LyreCli

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture(scope="module")
def bm25_index(lyre: LyreCli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("cli") / "index"
    lyre("--quiet", "index", SAMPLE / "corpus.jsonl", "--out", index, "--bm25-only")
    return index


@pytest.mark.slow
def test_bm25_search_and_eval_on_the_sample(lyre: LyreCli, bm25_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "bm25.run"
    summary = lyre(
        "search",
        "--index",
        bm25_index,
        "--queries",
        SAMPLE / "queries.tsv",
        "--mode",
        "bm25",
        "--rerank-depth",
        "0",
        "--k",
        "10",
        "--out",
        out,
    ).stdout
    assert "30 queries" in summary
    run = read_run(out)
    assert len(run) == 30 and all(len(docs) <= 10 for docs in run.values())
    meta = json.loads(out.with_name("bm25.run.meta.json").read_text())
    assert meta["settings"]["mode"] == "bm25"
    assert meta["index"]["stages"]["bm25"]["params"]["k1"] == 0.9
    assert "lyre" in meta["provenance"]["command"]
    table = lyre("eval", SAMPLE / "qrels.tsv", out, "--json").stdout
    ndcg = json.loads(table)["means"][str(out)]["nDCG@10"]
    assert 0.5 < ndcg <= 1.0  # BM25 on the sample finds most judged documents; 0 would mean broken ids


@pytest.mark.slow
def test_rerunning_index_is_a_no_op(lyre: LyreCli, bm25_index: Path) -> None:
    before = (bm25_index / "bm25" / "bm25.json").stat().st_mtime_ns
    summary = lyre("index", SAMPLE / "corpus.jsonl", "--out", bm25_index, "--bm25-only").stdout
    assert "docstore: up to date" in summary and "bm25: up to date" in summary
    assert (bm25_index / "bm25" / "bm25.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_index_refuses_a_different_corpus(lyre: LyreCli, bm25_index: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.tsv"
    other.write_text("a\tsome text\n")
    assert_one_line_error(
        lyre("index", other, "--out", bm25_index, "--bm25-only", check=False), "--overwrite"
    )


@pytest.mark.slow
def test_hybrid_search_on_a_bm25_only_index_says_how_to_fix(
    lyre: LyreCli, bm25_index: Path, tmp_path: Path
) -> None:
    result = lyre(
        "search",
        "--index",
        bm25_index,
        "--queries",
        SAMPLE / "queries.tsv",
        "--out",
        tmp_path / "x.run",
        check=False,
    )
    # The first stage the dense side needs is the embeddings; the hint builds both it and the dense index.
    assert_one_line_error(result, "the embeddings stage is missing", "lyre index CORPUS", "--embed-model")
    assert result.returncode == 2 and not (tmp_path / "x.run").exists()


@pytest.mark.slow
def test_malformed_corpus_line_is_one_line_error_and_keeps_existing_index(
    lyre: LyreCli, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"_id": "a", "text": "alpha"}\n')
    lyre("ingest", good, "--out", tmp_path / "index")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "alpha"}\n{"_id": "b", "text": \n')
    result = lyre("ingest", bad, "--out", tmp_path / "index", "--overwrite", check=False)
    assert_one_line_error(result, f"{bad}:2")
    store = subprocess.run(
        [
            sys.executable,
            "-c",
            "from indexes.docstore import DocStore; import sys; print(DocStore.open(sys.argv[1]).docids())",
            str(tmp_path / "index"),
        ],
        capture_output=True,
        text=True,
    )
    assert store.stdout.strip() == "['a']"


@pytest.mark.slow
def test_fuse_cli_writes_rrf_of_two_runs(lyre: LyreCli, tmp_path: Path) -> None:
    first, second = tmp_path / "a.run", tmp_path / "b.run"
    first.write_text("q Q0 d1 1 2.0 a\nq Q0 d2 2 1.0 a\n")
    second.write_text("q Q0 d2 1 9.0 b\nq Q0 d3 2 8.0 b\n")
    lyre("fuse", first, second, "--out", tmp_path / "f.run")
    fused = read_run(tmp_path / "f.run")["q"]
    assert fused["d2"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["d1"] == pytest.approx(1 / 61) and fused["d3"] == pytest.approx(1 / 62)


@pytest.mark.slow
def test_eval_of_a_malformed_run_names_file_and_line(lyre: LyreCli, tmp_path: Path) -> None:
    run = tmp_path / "bad.run"
    run.write_text("q Q0 d1 1 2.0 a\nq Q0 d2 two 1.0 a\n")
    assert_one_line_error(lyre("eval", SAMPLE / "qrels.tsv", run, check=False), f"{run}:2")


@pytest.mark.slow
def test_quiet_after_the_command_silences_progress(lyre: LyreCli, tmp_path: Path) -> None:
    loud = lyre("ingest", SAMPLE / "corpus.jsonl", "--out", tmp_path / "a")
    quiet = lyre("ingest", SAMPLE / "corpus.jsonl", "--out", tmp_path / "b", "--quiet")
    assert "ingested 120 documents" in loud.stderr
    assert quiet.stderr == "" and "120 documents" in quiet.stdout


@pytest.mark.slow
def test_index_rerun_checks_the_corpus_by_content_when_its_mtime_changed(
    lyre: LyreCli, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "alpha beta"}\n')
    lyre("index", corpus, "--out", tmp_path / "index", "--bm25-only")
    os.utime(corpus, ns=(0, 0))  # same bytes, other mtime: the hash decides, and it matches
    assert "docstore: up to date" in lyre("index", corpus, "--out", tmp_path / "index", "--bm25-only").stdout
    corpus.write_text('{"_id": "a", "text": "alpha gamma"}\n')
    result = lyre("index", corpus, "--out", tmp_path / "index", "--bm25-only", check=False)
    assert_one_line_error(result, "another corpus")


@pytest.mark.slow
def test_missing_reranker_weights_stop_search_before_the_first_stage(
    lyre: LyreCli, bm25_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = lyre(
        "search",
        "--index",
        bm25_index,
        "--queries",
        SAMPLE / "queries.tsv",
        "--mode",
        "bm25",
        "--out",
        tmp_path / "r.run",
        check=False,
    )  # default: rerank with vec-ai/lychee-rerank
    assert_one_line_error(result, "vec-ai/lychee-rerank", "--rerank-depth 0")
    assert "bm25 search" not in result.stderr and not (tmp_path / "r.run").exists()


@pytest.mark.slow
def test_rerank_cli_records_the_reranker_and_keeps_the_tail(
    lyre: LyreCli, bm25_index: Path, tmp_path: Path
) -> None:
    from embed_fixtures import build_tiny_qwen

    model = build_tiny_qwen(tmp_path / "reranker", causal_lm=True)
    first, out = tmp_path / "bm25.run", tmp_path / "reranked.run"
    lyre(
        "-q",
        "search",
        "--index",
        bm25_index,
        "--queries",
        SAMPLE / "queries.tsv",
        "--mode",
        "bm25",
        "--rerank-depth",
        "0",
        "--out",
        first,
    )
    lyre(
        "-q",
        "rerank",
        "--index",
        bm25_index,
        "--queries",
        SAMPLE / "queries.tsv",
        "--run",
        first,
        "--rerank-model",
        model,
        "--rerank-depth",
        "3",
        "--out",
        out,
    )
    meta = json.loads(out.with_name("reranked.run.meta.json").read_text())
    assert meta["reranker"]["model"] == str(model) and meta["reranker"]["kind"] == "yes-no"
    assert meta["settings"]["rerank_depth"] == 3 and meta["tag"] == "bm25.rerank3"
    before, after = read_run(first), read_run(out)
    for qid, docs in before.items():
        old = [docid for docid, _ in rank_order(docs)]
        new = rank_order(after[qid])
        assert {docid for docid, _ in new[:3]} == set(old[:3])  # the head is reordered, not replaced
        assert set(after[qid]) == set(docs)


@pytest.mark.slow
def test_re_encoding_makes_lyre_index_rebuild_the_dense_stage(lyre: LyreCli, tmp_path: Path) -> None:
    from scale_fixtures import save_tiny_bert

    model, index = save_tiny_bert(tmp_path / "model"), tmp_path / "index"
    lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model)
    lyre("-q", "encode", "--index", index, "--embed-model", model, "--max-length", "16", "--overwrite")
    assert "dense" not in json.loads((index / "manifest.json").read_text())["stages"]
    summary = lyre(
        "-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model, "--max-length", "16"
    ).stdout
    assert "dense: exact flat index" in summary and "up to date" not in summary.split("dense:")[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ("search", "--no-such-flag"),
            ("lyre search: No such option: --no-such-flag", "'lyre search --help'"),
        ),
        (("eval",), ("lyre eval: Missing argument 'qrels'", "'lyre eval --help'")),
        (("encode", "--index", "no/such/index"), ("'--index'", "no/such/index", "'lyre encode --help'")),
        (("serach",), ("No such command 'serach'", "'search'", "'lyre --help'")),
    ],
)
def test_a_command_line_the_parser_refuses_is_one_error_line_naming_the_command(
    lyre: LyreCli, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    one_line_error(lyre(*args, check=False), *fragments)


@pytest.mark.slow
def test_lyre_alone_prints_its_help(lyre: LyreCli) -> None:
    result = lyre(check=False)
    assert result.returncode == 2 and "Usage: lyre" in result.stdout + result.stderr
    assert "error:" not in result.stderr
