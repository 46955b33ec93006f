"""The search plan on the bundled sample: hybrid = RRF of both sides through the registry, rerank splice,
query-id removal, and every setting refused before anything is opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import LyreCli
from lyre.basics.errors import LyreError, OptionError
from lyre.formats.queries import read_queries
from lyre.formats.records import Query, document_text
from lyre.formats.runs import rank_order
from lyre.indexes.docstore import DocStore
from lyre.indexes.manifest import FORMAT_VERSION
from lyre.models.reranker import Reranker
from lyre.retrieval.fusion import linear, rrf
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan, top_k

OFF = RerankOptions(rerank_depth=0)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> Path:
    out = tmp_path_factory.mktemp("plan") / "index"
    lyre(
        "-q",
        "index",
        sample / "corpus.jsonl",
        "--out",
        out,
        "--embed-model",
        "sentence-transformers/all-MiniLM-L6-v2",
    )
    return out


@pytest.fixture(scope="module")
def queries(sample: Path) -> list[Query]:
    return read_queries(sample / "queries.tsv")


def search(index: Path, queries: list[Query], options: SearchOptions, rerank: RerankOptions = OFF) -> dict:
    return SearchPlan.open(index, options, rerank).search(queries)


@pytest.mark.slow
def test_hybrid_is_the_registry_fusion_of_bm25_and_dense(index: Path, queries: list[Query]) -> None:
    bm25 = search(index, queries, SearchOptions(mode="bm25", k=50, depth=50))
    dense = search(index, queries, SearchOptions(mode="dense", k=50, depth=50))
    hybrid = search(index, queries, SearchOptions(mode="hybrid", k=50, depth=50))
    assert hybrid == top_k(rrf([bm25, dense], k=60), 50)
    assert list(hybrid) == [query.qid for query in queries]  # every query, in file order
    weighted = search(index, queries, SearchOptions(fusion="linear", weight=0.75, k=50, depth=50))
    assert weighted == top_k(linear([bm25, dense], weights=[0.25, 0.75], normalization="min_max"), 50)


@pytest.mark.slow
def test_rerank_reorders_the_head_and_splices_the_tail(
    index: Path, queries: list[Query], qwen_reranker_folder: Path
) -> None:
    depth, k = 5, 20
    options = SearchOptions(mode="hybrid", k=k, depth=50)
    first = search(index, queries[:4], options)
    plan = SearchPlan.open(
        index, options, RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=depth)
    )
    reranked = plan.search(queries[:4])
    assert plan.tag == "lyre.hybrid-rrf60.rerank5"
    assert plan.reranker is not None and plan.reranker.settings["model"] == str(qwen_reranker_folder)
    scorer = Reranker.from_pretrained(qwen_reranker_folder, device="cpu")
    store = DocStore.open(index / "docstore")
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
    store = DocStore.open(index / "docstore")
    doc = store.fetch([0])[0]
    query = Query(qid=doc.docid, text=document_text(doc))
    kept = search(index, [query], SearchOptions(mode="bm25", k=10))
    removed = search(index, [query], SearchOptions(mode="bm25", k=10, remove_query_id=True))
    assert doc.docid in kept[doc.docid] and doc.docid not in removed[doc.docid]
    assert len(removed[doc.docid]) == 10


def test_a_query_with_no_bm25_hit_still_gets_the_dense_list(index: Path) -> None:
    query = Query(qid="q-stop", text="the of and")  # only stopwords: BM25 returns nothing
    assert search(index, [query], SearchOptions(mode="bm25", k=10))["q-stop"] == {}
    hybrid = search(index, [query], SearchOptions(mode="hybrid", k=10))["q-stop"]
    dense = search(index, [query], SearchOptions(mode="dense", k=10))["q-stop"]
    assert list(hybrid) == list(dense) and len(hybrid) == 10


@pytest.mark.parametrize(
    ("options", "rerank", "option"),
    [
        (SearchOptions(k=0), OFF, "k"),
        (SearchOptions(depth=0, k=1), OFF, "depth"),
        (SearchOptions(depth=10, k=20), OFF, "depth"),
        (SearchOptions(weight=2.0), OFF, "weight"),
        (SearchOptions(fusion="comb"), OFF, "fusion"),
        (SearchOptions(mode="bm25", rrf_k=0), OFF, "rrf_k"),
        (SearchOptions(normalization="max"), OFF, "normalization"),
        (SearchOptions(nprobe=0), OFF, "nprobe"),
        (SearchOptions(refine=-1), OFF, "refine"),
        (SearchOptions(tag="two words"), OFF, "tag"),
        (SearchOptions(), RerankOptions(rerank_depth=-3, rerank_model="/no/such/model"), "rerank_depth"),
    ],
)
def test_every_setting_is_checked_before_the_index_is_read(
    tmp_path: Path, options: SearchOptions, rerank: RerankOptions, option: str
) -> None:
    with pytest.raises(OptionError) as caught:
        SearchPlan.open(tmp_path / "no-index", options, rerank)  # the folder is never looked at
    assert caught.value.option == option


def test_a_template_without_slots_is_refused_before_the_reranker_is_looked_for(tmp_path: Path) -> None:
    rerank = RerankOptions(rerank_model=str(tmp_path / "no-model"), rerank_template="no slots here")
    with pytest.raises(LyreError, match="template"):
        SearchPlan.open(tmp_path / "no-index", SearchOptions(), rerank)


def test_missing_stage_or_reranker_stop_before_anything_loads(index: Path, tmp_path: Path) -> None:
    bm25_only = tmp_path / "bm25-only"
    bm25_only.mkdir()
    docstore = {"complete": True, "summary": "3 documents", "params": {}, "counts": {"documents": 3}}
    manifest = {"format": FORMAT_VERSION, "stages": {"docstore": docstore}}
    (bm25_only / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LyreError, match="the bm25 stage is missing"):  # and the model is never looked for
        SearchPlan.open(bm25_only, SearchOptions(mode="hybrid"), OFF)
    with pytest.raises(LyreError) as caught:
        SearchPlan.open(index, SearchOptions(mode="bm25"), RerankOptions(rerank_model=str(tmp_path / "none")))
    assert caught.value.options() == ["rerank_model", "rerank_depth"]
    assert "rerank_depth 0 to search without reranking" in str(caught.value)
