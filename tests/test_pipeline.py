"""The search pipeline on the bundled sample: hybrid = RRF of both sides, rerank splice, query-id removal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from embed_fixtures import build_tiny_qwen

from formats.queries import read_queries
from formats.records import Query, document_text
from formats.runs import rank_order
from indexes.build import IndexPlan, build_index
from indexes.docstore import DocStore
from models.reranker import Reranker
from retrieval.fusion import rrf
from retrieval.pipeline import SearchSettings, cut, search

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "index"
    build_index(SAMPLE / "corpus.jsonl", out, IndexPlan(embed_model="sentence-transformers/all-MiniLM-L6-v2"))
    return out


@pytest.fixture(scope="module")
def queries() -> list[Query]:
    return read_queries(SAMPLE / "queries.tsv")


def test_hybrid_is_rrf_of_bm25_and_dense(index: Path, queries: list[Query]) -> None:
    bm25 = search(index, queries, SearchSettings(mode="bm25", k=50, depth=50))
    dense = search(index, queries, SearchSettings(mode="dense", k=50, depth=50))
    hybrid = search(index, queries, SearchSettings(mode="hybrid", k=50, depth=50))
    assert hybrid == cut(rrf([bm25, dense], k=60), 50)
    assert set(hybrid) == {query.qid for query in queries}


def test_rerank_reorders_the_head_and_splices_the_tail(
    index: Path, queries: list[Query], tmp_path: Path
) -> None:
    folder = build_tiny_qwen(tmp_path / "reranker", causal_lm=True, initializer_range=0.5)
    depth, k = 5, 20
    first = search(index, queries[:4], SearchSettings(mode="hybrid", k=k, depth=50))
    reranked = search(
        index,
        queries[:4],
        SearchSettings(mode="hybrid", k=k, depth=50, rerank_model=str(folder), rerank_depth=depth),
    )
    scorer = Reranker.from_pretrained(folder, device="cpu")
    store = DocStore.open(index)
    for query in queries[:4]:
        before = [docid for docid, _ in rank_order(first[query.qid])]
        after = rank_order(reranked[query.qid])
        head = before[:depth]
        texts = [document_text(doc) for doc in store.fetch(store.rows_of(head))]
        expected = dict(zip(head, scorer.score(query.text, texts).tolist(), strict=True))
        assert [docid for docid, _ in after[:depth]] == [docid for docid, _ in rank_order(expected)]
        assert [score for _, score in after[:depth]] == pytest.approx(
            sorted(expected.values(), reverse=True), rel=1e-5
        )  # batches mix queries in the pipeline: float32 sums in another order
        assert [docid for docid, _ in after[depth:]] == before[depth:]  # the tail keeps first-stage order
        assert max(score for _, score in after[depth:]) < min(expected.values())


def test_remove_query_id_drops_the_query_itself(index: Path) -> None:
    store = DocStore.open(index)
    doc = store.fetch([0])[0]
    query = Query(qid=doc.docid, text=document_text(doc))
    kept = search(index, [query], SearchSettings(mode="bm25", k=10))
    removed = search(index, [query], SearchSettings(mode="bm25", k=10, remove_query_id=True))
    assert doc.docid in kept[doc.docid] and doc.docid not in removed[doc.docid]
    assert len(removed[doc.docid]) == 10


def test_a_query_with_no_bm25_hit_still_gets_the_dense_list(index: Path) -> None:
    query = Query(qid="q-stop", text="the of and")  # only stopwords: BM25 returns nothing
    assert search(index, [query], SearchSettings(mode="bm25", k=10))["q-stop"] == {}
    hybrid = search(index, [query], SearchSettings(mode="hybrid", k=10))["q-stop"]
    dense = search(index, [query], SearchSettings(mode="dense", k=10))["q-stop"]
    assert list(hybrid) == list(dense) and len(hybrid) == 10


def test_query_groups_bound_the_pairs_held_at_once() -> None:
    from retrieval.pipeline import _query_groups

    heads = {"a": ["1", "2", "3"], "b": ["4", "5"], "c": ["6"], "d": ["7", "8", "9", "10"]}
    assert _query_groups(heads, 5) == [["a", "b"], ["c", "d"]]
    assert _query_groups(heads, 2) == [
        ["a"],
        ["b"],
        ["c"],
        ["d"],
    ]  # one query over the bound still goes alone
    assert _query_groups({}, 5) == [[]]
