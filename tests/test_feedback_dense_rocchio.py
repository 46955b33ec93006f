"""Dense Rocchio feedback against numpy on the index's own stored vectors.

The expected run is computed here from the embedding chunks read with numpy (float16 on disk) and the
query vectors the index's encoder gives: the first search's top ``k`` rows by inner product, the moved
vector ``alpha * q + beta * mean``, and the second search's scores. A flat index must give exactly that
ranking; an IVF-PQ index whose exact refine covers the whole list must score every returned document with
the moved vector exactly, the feedback documents being its own first search's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import LyreCli
from lyre.formats.queries import read_queries
from lyre.formats.records import Query
from lyre.indexes.docstore import DocStore
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan

OFF = RerankOptions(rerank_depth=0)
K = 20


def stored_vectors(index: Path) -> np.ndarray:
    """Every row's vector, from the chunk files in row order (float16 on disk, as float32)."""
    chunks = sorted(path for path in (index / "embeddings").glob("chunk-*.npy") if ".rows." not in path.name)
    return np.concatenate([np.load(path) for path in chunks]).astype(np.float32)


def moved(query: np.ndarray, documents: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return (alpha * query.astype(np.float64) + beta * documents.astype(np.float64).mean(axis=0)).astype(
        np.float32
    )


def query_vectors(plan: SearchPlan, queries: list[Query]) -> np.ndarray:
    assert plan.embedder is not None
    return plan.embedder.encode_queries([query.text for query in queries])


@pytest.fixture(scope="module")
def flat_index(
    tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path, tiny_bert: Path
) -> Path:
    index = tmp_path_factory.mktemp("dense-prf") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--embed-model", tiny_bert)
    return index


@pytest.mark.slow
def test_flat_dense_rocchio_equals_numpy(flat_index: Path, sample: Path) -> None:
    queries = read_queries(sample / "queries.tsv")
    options = SearchOptions(mode="dense", dense_prf="rocchio", dense_prf_docs=3, k=K, depth=K)
    plan = SearchPlan.open(flat_index, options, OFF)
    run = plan.search(queries)
    vectors, documents = stored_vectors(flat_index), query_vectors(plan, queries)
    docids = DocStore.open(flat_index / "docstore").docids()
    for query, vector in zip(queries, documents, strict=True):
        first = vectors @ vector
        top = np.argsort(-first, kind="stable")[:3]
        assert first[top[-1]] - np.sort(first)[-4] > 1e-6  # the third and fourth rows are not tied
        second = vectors @ moved(vector, vectors[top], 0.4, 0.6)
        order = np.argsort(-second, kind="stable")[:K]
        found = run[query.qid]
        assert set(found) == {docids[row] for row in order}
        for row in order:
            assert found[docids[row]] == pytest.approx(float(second[row]), rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_without_feedback_documents_the_vector_is_only_scaled(flat_index: Path, sample: Path) -> None:
    """``dense_prf_beta`` 0: the moved vector is ``alpha * q``, which ranks as ``q`` does."""
    queries = read_queries(sample / "queries.tsv")[:5]
    plain = SearchPlan.open(flat_index, SearchOptions(mode="dense", k=K, depth=K), OFF).search(queries)
    options = SearchOptions(
        mode="dense", dense_prf="rocchio", dense_prf_beta=0.0, dense_prf_alpha=2.0, k=K, depth=K
    )
    scaled = SearchPlan.open(flat_index, options, OFF).search(queries)
    for qid, documents in plain.items():
        assert list(scaled[qid]) == list(documents)
        for docid, score in documents.items():
            assert scaled[qid][docid] == pytest.approx(2 * score, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_ivfpq_dense_rocchio_reads_its_own_first_search(
    tmp_path: Path, lyre: LyreCli, tiny_bert: Path
) -> None:
    from scale_fixtures import write_corpus

    corpus = write_corpus(tmp_path / "corpus.jsonl", 300, max_words=20)
    index = tmp_path / "index"
    lyre("-q", "index", corpus, "--out", index, "--embed-model", tiny_bert, "--index-type", "ivfpq")
    queries = [
        Query(f"q{i}", text) for i, text in enumerate(["kinase signalling", "tumour cells", "insulin"])
    ]
    refined = {"mode": "dense", "k": K, "depth": K, "nprobe": 2, "refine": 100}
    plain = SearchPlan.open(index, SearchOptions(**refined), OFF).search(queries)  # type: ignore[arg-type]
    options = SearchOptions(**refined, dense_prf="rocchio", dense_prf_docs=4)  # type: ignore[arg-type]
    plan = SearchPlan.open(index, options, OFF)
    run = plan.search(queries)
    vectors, encoded = stored_vectors(index), query_vectors(plan, queries)
    rows = {docid: row for row, docid in enumerate(DocStore.open(index / "docstore").docids())}
    for query, vector in zip(queries, encoded, strict=True):
        feedback = [rows[docid] for docid in list(plain[query.qid])[:4]]  # its own first search's top 4
        target = moved(vector, vectors[feedback], 0.4, 0.6)
        for docid, score in run[query.qid].items():
            assert score == pytest.approx(float(vectors[rows[docid]] @ target), rel=1e-5, abs=1e-6)
        assert run[query.qid] != plain[query.qid]
