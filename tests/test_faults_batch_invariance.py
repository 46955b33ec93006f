"""Issue 18, class 4: a cached search writes the bytes of an uncached one, whatever was searched before.

A query's vector and a pair's rerank score used to depend on the queries or pairs they were batched with
(padding and batch shape change the float arithmetic), so a search that took some of them from the cache
and computed the rest differed from an uncached search in the last bits of its scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import LyreCli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path, tiny_bert: Path) -> Path:
    """The sample indexed with BM25 and the tiny BERT, never searched (copied by each test)."""
    index = tmp_path_factory.mktemp("invariance") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--embed-model", tiny_bert)
    return index


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    """A copy of the built index with an empty cache."""
    return Path(shutil.copytree(built, tmp_path / "index"))


def first_queries(sample: Path, tmp_path: Path, count: int) -> Path:
    path = tmp_path / f"first-{count}.tsv"
    lines = (sample / "queries.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:count]), encoding="utf-8")
    return path


def test_dense_search_after_searches_of_some_queries_equals_an_uncached_search(
    lyre: LyreCli, index: Path, sample: Path, tmp_path: Path
) -> None:
    search = ("-q", "search", "--index", index, "--mode", "dense", "--rerank-depth", "0")
    for count in (1, 10):  # one query alone (a batch without padding), then nine new ones with it
        lyre(*search, "--queries", first_queries(sample, tmp_path, count), "--out", tmp_path / f"{count}.run")
    lyre(*search, "--queries", sample / "queries.tsv", "--out", tmp_path / "cached.run")
    lyre(*search, "--queries", sample / "queries.tsv", "--out", tmp_path / "uncached.run", "--no-cache")
    cached, uncached = (tmp_path / "cached.run").read_bytes(), (tmp_path / "uncached.run").read_bytes()
    assert len(uncached.splitlines()) > 30 * 5
    assert cached == uncached


def test_deeper_rerank_after_a_shallow_one_equals_an_uncached_rerank(
    lyre: LyreCli, index: Path, sample: Path, tmp_path: Path, qwen_reranker_folder: Path
) -> None:
    search = ("-q", "search", "--index", index, "--mode", "bm25", "--queries", sample / "queries.tsv")
    rerank = ("--rerank-model", qwen_reranker_folder)
    lyre(*search, *rerank, "--rerank-depth", "3", "--out", tmp_path / "shallow.run")
    lyre(*search, *rerank, "--rerank-depth", "6", "--out", tmp_path / "cached.run")
    lyre(*search, *rerank, "--rerank-depth", "6", "--out", tmp_path / "uncached.run", "--no-cache")
    cached, uncached = (tmp_path / "cached.run").read_bytes(), (tmp_path / "uncached.run").read_bytes()
    assert cached == uncached
    assert cached != (tmp_path / "shallow.run").read_bytes()  # the deeper rerank scored new pairs
