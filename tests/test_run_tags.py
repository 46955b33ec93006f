"""Run tags (``retrieval/run_tags.py``): two runs made differently get different tags, and the sidecar
records the values actually used. Expected tags are written out from the grammar in the module docstring."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import SAMPLE, LyreCli
from lyre.formats.runs import meta_path
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.passage_search import PassageSearch
from lyre.retrieval.run_tags import DenseEngine, search_tag

NO_RERANK = RerankOptions(rerank_depth=0)


def manifest(**dense: Any) -> dict[str, Any]:
    """A manifest whose complete dense stage recorded ``dense`` as its counts."""
    return {"stages": {"dense": {"complete": True, "counts": dense}}}


FLAT = manifest(index_type="flat", nprobe=None, refine=0)
IVFPQ = manifest(index_type="ivfpq", nprobe=32, refine=128)


def passages(rule: str) -> PassageSearch:
    records = {
        "passages": {"complete": True, "counts": {"passages_per_document_mean": 4.5, "passages": 540}},
        "bm25": {"complete": True, "params": {"store": "passages"}},
        "embeddings": {"complete": True, "params": {"store": "passages"}},
    }
    found = PassageSearch.open(Path("index"), {"stages": records}, "hybrid", AggregationOptions(rule))
    assert found is not None
    return found


def test_an_exact_search_of_a_document_index_is_unmarked() -> None:
    assert search_tag(SearchOptions(mode="bm25"), NO_RERANK) == "lyre.bm25"
    dense = SearchOptions(mode="dense")
    assert search_tag(dense, NO_RERANK, DenseEngine.of(FLAT, dense)) == "lyre.dense"
    assert search_tag(SearchOptions(), RerankOptions(), DenseEngine.of(FLAT, SearchOptions())) == (
        "lyre.hybrid-rrf60.rerank100"
    )


def test_an_ivfpq_search_says_the_refine_depth_it_used() -> None:
    dense = SearchOptions(mode="dense")
    tuned, refined, unrefined = (
        DenseEngine.of(IVFPQ, options)
        for options in (dense, replace(dense, refine=64), replace(dense, refine=0))
    )
    assert (tuned.nprobe, tuned.refine) == (32, 128) and unrefined == DenseEngine("ivfpq", 32, 0)
    tags = [search_tag(dense, NO_RERANK, engine) for engine in (tuned, refined, unrefined)]
    assert tags == ["lyre.dense-ivfpq-refine128", "lyre.dense-ivfpq-refine64", "lyre.dense-ivfpq-refine0"]
    assert DenseEngine.of(IVFPQ, replace(dense, nprobe=4)).nprobe == 4


def test_a_flat_index_ignores_refine_and_nprobe() -> None:
    options = SearchOptions(mode="dense", refine=64, nprobe=3)
    assert DenseEngine.of(FLAT, options) == DenseEngine("flat", None, 0)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("maxp", "lyre.hybrid-rrf60-maxp"), ("firstp", "lyre.hybrid-rrf60-firstp"),
     ("sump", "lyre.hybrid-rrf60-sump"), ("none", "lyre.hybrid-rrf60-passages")],
)  # fmt: skip
def test_a_passage_index_names_its_aggregation(rule: str, expected: str) -> None:
    engine = DenseEngine.of(FLAT, SearchOptions())
    assert search_tag(SearchOptions(), NO_RERANK, engine, passages(rule)) == expected


def test_every_word_in_its_place_and_a_given_tag_wins() -> None:
    options = SearchOptions(fusion="linear", weight=0.7)
    engine = DenseEngine.of(IVFPQ, options)
    reranked = RerankOptions(rerank_depth=50)
    assert search_tag(options, reranked, engine, passages("maxp")) == (
        "lyre.hybrid-linear0.3,0.7-ivfpq-refine128-maxp.rerank50"
    )
    assert search_tag(replace(options, tag="mine"), reranked, engine, passages("maxp")) == "mine"


def test_a_passage_search_says_how_it_made_documents() -> None:
    assert passages("maxp").describe() == (
        "passage index: passages aggregated to documents with maxp (a document scores as its best passage)"
    )
    assert (
        passages("none").describe() == "passage index, no aggregation: the run lists passages (ids DOCID#N)"
    )


@pytest.fixture(scope="module")
def ivfpq_passages(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, tiny_bert: Path) -> Path:
    """The sample split into 32-token passages (537 of them: enough to train IVF-PQ), a tiny BERT."""
    index = tmp_path_factory.mktemp("tags") / "index"
    lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", tiny_bert,
         "--passage-tokens", "32", "--index-type", "ivfpq")  # fmt: skip
    return index


@pytest.mark.slow
def test_a_search_tags_and_records_the_engine_refine_and_aggregation_it_used(
    ivfpq_passages: Path, lyre: LyreCli, tmp_path: Path
) -> None:
    from lyre.indexes.manifest import read_manifest

    tuned = read_manifest(ivfpq_passages)["stages"]["dense"]["counts"]
    search = ["search", "--index", ivfpq_passages, "--queries", SAMPLE / "queries.tsv", "--rerank-depth", "0"]
    made = {}
    for name, extra in (
        ("tuned", []),
        ("refine0", ["--refine", "0", "--nprobe", "2"]),
        ("none", ["--aggregate", "none"]),
    ):
        out = tmp_path / f"{name}.run"
        result = lyre(*search, "--mode", "dense", *extra, "--out", out)
        made[name] = (json.loads(meta_path(out).read_text())["search"], result.stderr)
    refine = tuned["refine"]
    assert made["tuned"][0] == {
        "tag": f"lyre.dense-ivfpq-refine{refine}-maxp",
        "mode": "dense",
        "fusion": None,
        "dense": {"index_type": "ivfpq", "nprobe": tuned["nprobe"], "refine": refine},
        "aggregation": "maxp",
        "rerank_depth": 0,
    }
    assert "passages aggregated to documents with maxp" in made["tuned"][1]
    assert made["refine0"][0]["tag"] == "lyre.dense-ivfpq-refine0-maxp"
    assert made["refine0"][0]["dense"] == {"index_type": "ivfpq", "nprobe": 2, "refine": 0}
    assert made["none"][0]["tag"] == f"lyre.dense-ivfpq-refine{refine}-passages"
    assert made["none"][0]["aggregation"] == "none" and "the run lists passages" in made["none"][1]
    evaluated = lyre("eval", SAMPLE / "qrels.tsv", tmp_path / "none.run", "--measures", "nDCG@10")
    assert "are passage ids of judged documents" in evaluated.stderr
