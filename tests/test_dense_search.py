"""Dense search (indexes/dense_search.py): exact merges across shards, the exact refine, and results that
do not depend on which queries are searched together."""

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

import dense_fixtures  # noqa: E402
from dense_fixtures import IVFPQ, N, numpy_top, write_store  # noqa: E402
from lyre.basics.errors import LyreError  # noqa: E402
from lyre.indexes.dense_search import DenseIndex, each_query_alone, top_k  # noqa: E402
from lyre.indexes.dense_stage import DenseOptions, build_dense  # noqa: E402
from lyre.indexes.dense_tuning import overlap_at  # noqa: E402

faiss.omp_set_num_threads(1)  # on a shared 2-core machine, OpenMP barriers cost more than they save

vectors = dense_fixtures.vectors  # the shared fixture
queries = dense_fixtures.queries  # the shared fixture
index_dir = dense_fixtures.index_dir  # the shared fixture


def test_top_k_orders_by_score_then_row_and_pads():
    rows = np.array([[5, 3, -1, 9]])
    scores = np.array([[1.0, 2.0, 7.0, 1.0]], dtype=np.float32)
    best_rows, best_scores = top_k(rows, scores, 6)
    assert best_rows.tolist() == [[3, 5, 9, -1, -1, -1]]
    assert best_scores[0, :3].tolist() == [2.0, 1.0, 1.0]
    assert np.isneginf(best_scores[0, 3:]).all()


def test_flat_equals_numpy_exact_search(index_dir, vectors, queries, capsys):
    record = build_dense(index_dir, DenseOptions(index_type="flat", shard_rows=1100)).record
    assert record.counts["num_shards"] == 3 and record.counts["recall"] == 1.0
    rows, scores = DenseIndex.open(index_dir, device="cpu").search(queries, 10)
    expected_rows, expected_scores = numpy_top(vectors, queries, 10)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    assert "dense search: flat, Faiss CPU (device cpu asked for)" in capsys.readouterr().err


def test_fewer_hits_than_k_are_padded(index_dir, queries):
    build_dense(index_dir, DenseOptions(index_type="flat"))
    rows, scores = DenseIndex.open(index_dir).search(queries[:2], N + 5)
    assert (rows[:, :N] >= 0).all() and (rows[:, N:] == -1).all()
    assert np.isneginf(scores[:, N:]).all()


@pytest.mark.slow
def test_multi_shard_equals_single_shard_with_the_same_quantizer(tmp_path, vectors, queries):
    sharded, single = write_store(tmp_path / "sharded", vectors), write_store(tmp_path / "single", vectors)
    build_dense(sharded, DenseOptions(shard_rows=700, **IVFPQ))
    (single / "dense").mkdir()
    (single / "dense" / "trained.faiss").write_bytes((sharded / "dense" / "trained.faiss").read_bytes())
    build_dense(single, DenseOptions(shard_rows=N, **IVFPQ))
    assert len(list((sharded / "dense").glob("shard-*.faiss"))) == 5
    many, one = DenseIndex.open(sharded), DenseIndex.open(single)
    for nprobe, refine in [(1, 0), (4, 0), (16, 0), (4, 100)]:
        rows_many, scores_many = many.search(queries, 20, nprobe=nprobe, refine=refine)
        rows_one, scores_one = one.search(queries, 20, nprobe=nprobe, refine=refine)
        np.testing.assert_array_equal(rows_many, rows_one)
        np.testing.assert_array_equal(scores_many, scores_one)


def test_refine_improves_recall(index_dir, vectors, queries):
    # m=4: 8 dimensions per byte, a coarse code whose ranking exact re-scoring must repair.
    build_dense(index_dir, DenseOptions(index_type="ivfpq", nlist=16, pq_m=4, nprobe=16, refine=0))
    index = DenseIndex.open(index_dir)
    truth, _ = numpy_top(vectors, queries, 10)
    plain = overlap_at(index.search(queries, 10, refine=0)[0], truth)
    refined_rows, refined_scores = index.search(queries, 10, refine=200)
    refined = overlap_at(refined_rows, truth)
    assert refined >= 0.98 and refined > plain + 0.1
    # Refined scores are the exact inner products of the stored float16 vectors.
    exact = np.einsum("qd,qkd->qk", queries, vectors.astype(np.float16).astype(np.float32)[refined_rows])
    np.testing.assert_allclose(refined_scores, exact, rtol=1e-5)


def test_torch_flat_search_equals_faiss_flat(index_dir, vectors, queries, capsys):
    build_dense(index_dir, DenseOptions(index_type="flat", shard_rows=1100))
    expected_rows, expected_scores = DenseIndex.open(index_dir, device="cpu").search(queries, 50)
    capsys.readouterr()
    index = DenseIndex.open(index_dir, device="cpu", engine="torch")
    assert "dense search: flat, torch on cpu (engine torch asked for)" in capsys.readouterr().err
    assert index.shards == [] and len(index.torch_flat.shards) == 3
    rows, scores = index.search(queries, 50)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(rows, expected_rows)  # only float32 near-ties could swap: none here
    rows, scores = index.search(queries[:2], N + 5)  # more than the index holds: padded like Faiss
    assert (rows[:, :N] >= 0).all() and (rows[:, N:] == -1).all() and np.isneginf(scores[:, N:]).all()


def test_bad_queries_are_refused(index_dir):
    build_dense(index_dir, DenseOptions(index_type="flat"))
    with pytest.raises(LyreError, match="needs \\[n, 32\\]"):
        DenseIndex.open(index_dir).search(np.zeros((2, 5), dtype=np.float32), 10)


def test_each_query_alone_restores_faiss_blas_threshold():
    before = faiss.cvar.distance_compute_blas_threshold
    with pytest.raises(RuntimeError), each_query_alone(faiss):
        assert faiss.cvar.distance_compute_blas_threshold == 2**31 - 1
        raise RuntimeError("a failing search")
    assert faiss.cvar.distance_compute_blas_threshold == before


# --- one query's results do not depend on the others ----------------------------------------------------

WIDE = 1024
"""lychee-embed's dimension, where BLAS scores of one query changed with the batch around it (issue 18)."""


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """2,000 stored and 300 query vectors of 1,024 dimensions, every value float16-representable (as
    stored vectors are), so nothing hides a difference in the last bit of a sum."""
    rng = np.random.default_rng(7)
    stored = rng.standard_normal((2000, WIDE))
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    queries = rng.standard_normal((300, WIDE)).astype(np.float16).astype(np.float32)
    return stored.astype(np.float16).astype(np.float32), queries


def assert_alone_equals_among_all(index: DenseIndex, queries: np.ndarray, k: int, **settings: int) -> None:
    """The rows and scores of 10 queries searched alone equal theirs among all 300, bit for bit, wherever
    the 10 sit among the 300 (first, middle, last)."""
    rows, scores = index.search(queries, k, **settings)
    for start in (0, 147, 290):
        alone_rows, alone_scores = index.search(queries[start : start + 10], k, **settings)
        np.testing.assert_array_equal(alone_rows, rows[start : start + 10])
        assert alone_scores.tobytes() == scores[start : start + 10].tobytes(), start


@pytest.mark.slow
def test_flat_scores_do_not_depend_on_the_other_queries(tmp_path, wide):
    stored, queries = wide
    index_dir = write_store(tmp_path / "idx", stored, chunk=1000)
    build_dense(index_dir, DenseOptions(index_type="flat", shard_rows=1200))
    assert_alone_equals_among_all(DenseIndex.open(index_dir, device="cpu"), queries, 100)
    assert_alone_equals_among_all(DenseIndex.open(index_dir, device="cpu", engine="torch"), queries, 100)


@pytest.mark.slow
def test_ivfpq_and_refine_scores_do_not_depend_on_the_other_queries(tmp_path, wide):
    """The coarse quantizer (a flat index over the centroids), the PQ scan and the exact refine, with
    numpy and with torch, and two shards that share the quantizer (one assignment, then each scans)."""
    stored, queries = wide
    index_dir = write_store(tmp_path / "idx", stored, chunk=1000)
    options = DenseOptions(
        index_type="ivfpq", nlist=32, pq_m=64, nprobe=8, refine=150, shard_rows=1000, tune_queries=20
    )
    build_dense(index_dir, options)
    numpy_refine = DenseIndex.open(index_dir, device="cpu")
    assert len(numpy_refine.shards) == 2 and numpy_refine.refine_device is None
    assert_alone_equals_among_all(numpy_refine, queries, 100)
    assert_alone_equals_among_all(numpy_refine, queries, 100, refine=0)
    torch_refine = DenseIndex.open(index_dir, device="cpu", engine="torch")
    assert torch_refine.refine_device == "cpu"
    assert_alone_equals_among_all(torch_refine, queries, 100)
