"""Feedback everywhere a first stage goes: hybrid with both sides' feedback, the cache, passages, reranking
after, run tags, and ``lyre tune`` grids of feedback settings applied with ``--settings``.

The tests on the hybrid index are slow: the index is encoded with a model first (seconds on 2 cores)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import LyreCli
from lyre.formats.queries import read_queries
from lyre.formats.records import Query
from lyre.formats.runs import read_run
from lyre.retrieval.cache import CacheOptions, Deferred
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan
from lyre.retrieval.settings_file import apply, read_settings
from lyre.retrieval.tune import TuneOptions, tune

OFF = RerankOptions(rerank_depth=0)
BOTH = SearchOptions(mode="hybrid", prf="rm3", dense_prf="rocchio", k=50, depth=50)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path, tiny_bert: Path) -> Path:
    out = tmp_path_factory.mktemp("feedback-plan") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", out, "--embed-model", tiny_bert)
    return out


@pytest.fixture(scope="module")
def queries(sample: Path) -> list[Query]:
    return read_queries(sample / "queries.tsv")


@pytest.mark.slow
def test_hybrid_fuses_the_two_sides_second_searches(index: Path, queries: list[Query]) -> None:
    def side(**settings: object) -> dict:
        options = replace(BOTH, **settings)  # type: ignore[arg-type]
        return SearchPlan.open(index, options, OFF).search(queries)

    from lyre.retrieval.fusion import rrf
    from lyre.retrieval.plan import top_k

    bm25, dense = side(mode="bm25", dense_prf="none"), side(mode="dense", prf="none")
    assert side() == top_k(rrf([bm25, dense], k=60), 50)
    assert bm25 != side(mode="bm25", prf="none", dense_prf="none")
    assert dense != side(mode="dense", prf="none", dense_prf="none")


@pytest.mark.slow
def test_a_cached_search_with_feedback_equals_an_uncached_one(
    index: Path, queries: list[Query], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    uncached = SearchPlan.open(copy, BOTH, OFF, CacheOptions(no_cache=True)).search(queries)
    first = SearchPlan.open(copy, BOTH, OFF, CacheOptions())
    assert first.search(queries) == uncached
    second = SearchPlan.open(copy, BOTH, OFF, CacheOptions())
    assert second.search(queries) == uncached
    record = second.feedback_record(queries)
    assert (
        record is not None
        and record["bm25"]["expansions"] == first.feedback_record(queries)["bm25"]["expansions"]
    )
    parts = (second.store, second.bm25, second.dense, second.embedder)
    assert not any(isinstance(part, Deferred) and part.is_open for part in parts)  # nothing loaded
    assert second.cache is not None
    assert second.cache.hits.get("aligned") == len(queries)
    assert second.cache.hits.get("expansion") == len(queries)  # the sidecar's expansions read, not remade
    assert second.cache.misses.get("expansion", 0) == 0
    other = SearchPlan.open(copy, replace(BOTH, prf_terms=5), OFF, CacheOptions())
    assert other.search(queries) != uncached  # another setting is another key
    assert other.cache is not None and other.cache.misses.get("expansion") == len(queries)


@pytest.mark.slow
def test_feedback_is_named_in_the_run_tag(index: Path) -> None:
    assert SearchPlan.open(index, BOTH, OFF).tag == "lyre.hybrid-rrf60-rm3-vrocchio"
    assert SearchPlan.open(index, replace(BOTH, mode="bm25", dense_prf="none"), OFF).tag == "lyre.bm25-rm3"
    assert SearchPlan.open(index, replace(BOTH, prf="none", dense_prf="none"), OFF).tag == "lyre.hybrid-rrf60"


def test_a_passage_index_feeds_back_passages_then_aggregates(
    tmp_path: Path, lyre: LyreCli, sample: Path, queries: list[Query]
) -> None:
    index = tmp_path / "passages"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only", "--passage-tokens", "24")
    options = SearchOptions(mode="bm25", prf="rm3", k=20, depth=20)
    plan = SearchPlan.open(index, options, OFF)
    run = plan.search(queries)
    plain = SearchPlan.open(index, replace(options, prf="none"), OFF).search(queries)
    assert run != plain
    assert all("#" not in docid for documents in run.values() for docid in documents)  # MaxP: documents
    record = plan.feedback_record(queries)
    assert record is not None
    assert any(len(terms) > 2 for terms in record["bm25"]["expansions"].values())


@pytest.mark.slow
def test_reranking_reads_the_feedback_first_stage(
    index: Path, queries: list[Query], qwen_reranker_folder: Path
) -> None:
    options = replace(BOTH, mode="bm25", dense_prf="none", k=20, depth=20)
    first = SearchPlan.open(index, options, OFF).search(queries)
    rerank = RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=5)
    plan = SearchPlan.open(index, options, rerank)
    try:
        reranked = plan.search(queries)
    finally:
        if plan.reranker is not None:
            plan.reranker.close()
    for qid, documents in first.items():
        assert set(list(reranked[qid])[:5]) == set(list(documents)[:5])  # the feedback search's head
        assert list(reranked[qid])[5:] == list(documents)[5:]  # its tail as it was


@pytest.mark.slow
def test_tune_chooses_feedback_settings_and_search_applies_them(
    index: Path, sample: Path, lyre: LyreCli, tmp_path: Path
) -> None:
    grid = ["prf=none,rm3,bo1", "prf-docs=3,10", "prf-terms=5"]
    options = SearchOptions(mode="bm25", k=100, depth=100)
    report = tune(
        index, sample / "queries.tsv", sample / "qrels.tsv", grid, options, OFF, TuneOptions(folds=2),
        cache=CacheOptions(no_cache=True),
    )  # fmt: skip
    labels = {" ".join(f"{name}={value}" for name, value in setting.items()) for setting, _ in report.table}
    assert labels == {
        "prf=none",  # prf_docs and prf_terms are ignored without feedback: one setting, not two
        "prf=rm3 prf_docs=3 prf_terms=5",
        "prf=rm3 prf_docs=10 prf_terms=5",
        "prf=bo1 prf_docs=3 prf_terms=5",
        "prf=bo1 prf_docs=10 prf_terms=5",
    }
    settings = tmp_path / "chosen.json"
    lyre("-q", "tune", "--index", index, "--queries", sample / "queries.tsv", "--qrels", sample / "qrels.tsv",
         "--mode", "bm25", "--k", "100", "--depth", "100", "--folds", "2", "--rerank-depth", "0",
         "--out", settings, *[part for entry in grid for part in ("--grid", entry)])  # fmt: skip
    chosen = read_settings(settings)
    assert chosen == report.chosen
    out = tmp_path / "chosen.run"
    lyre("-q", "search", "--index", index, "--queries", sample / "queries.tsv", "--mode", "bm25",
         "--k", "100", "--depth", "100", "--rerank-depth", "0", "--settings", settings,
         "--out", out)  # fmt: skip
    applied, _ = apply(chosen, options, OFF)
    expected = SearchPlan.open(index, applied, OFF).search(read_queries(sample / "queries.tsv"))
    meta = json.loads((tmp_path / "chosen.run.meta.json").read_text())
    assert {key: meta["settings"][key] for key in chosen} == chosen
    assert read_run(out) == expected
