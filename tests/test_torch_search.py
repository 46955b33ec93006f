"""torch flat search and exact re-scoring against Faiss flat, on CPU torch (the same code runs on CUDA).

Faiss flat scores float32 queries against float32 vectors; lyre orders its results by score descending,
then row ascending (``indexes.dense_search.top_k``). torch search must find the same rows in the same order,
whatever the block sizes, the shard layout and the vectors' storage dtype.
"""

from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
torch = pytest.importorskip("torch")

from lyre.indexes.embeddings import EmbeddingStore, StoreSpec  # noqa: E402
from lyre.indexes.torch_search import (  # noqa: E402
    QUERY_BLOCK,
    TorchFlatSearch,
    block_bytes,
    block_top,
    exact_scores,
    fixed_blocks,
    plan_blocks,
)

faiss.omp_set_num_threads(1)
DIM = 32
#: Every test runs on the CPU, and on the GPU too where torch sees one (ties and top-k differ by device).
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def clustered(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Unit vectors around 20 centres (many near-equal scores inside a cluster, like text embeddings)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def faiss_flat(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Faiss flat inner-product search of the vectors as Faiss sees them (float32), in lyre's order
    (score descending, then row ascending; Faiss itself leaves the order of equal scores open)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)


def assert_same_as_faiss(
    found: tuple[np.ndarray, np.ndarray], vectors: np.ndarray, queries: np.ndarray, k: int
) -> None:
    """Same scores to float32 rounding, and the same row at every rank whose score is apart from its
    neighbours' (the rank before and after, including the first one left out) by more than rounding.

    Two engines sum a product in different orders, so two scores closer than ~1e-7 may swap; nothing
    else may differ. The share of ranks checked is asserted too, so the comparison is never vacuous.
    """
    rows, scores = found
    expected_rows, expected_scores = faiss_flat(vectors, queries, k + 1)
    np.testing.assert_allclose(scores, expected_scores[:, :k], rtol=0, atol=1e-5)
    apart = np.abs(np.diff(expected_scores, axis=1)) > 1e-5
    isolated = apart[:, :k].copy()
    isolated[:, 1:] &= apart[:, : k - 1]
    np.testing.assert_array_equal(rows[isolated], expected_rows[:, :k][isolated])
    assert isolated.mean() > 0.9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_random_vectors_equal_faiss_flat(dtype, device):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, DIM)).astype(dtype)
    queries = rng.normal(size=(25, DIM)).astype(np.float32)
    search = TorchFlatSearch.from_arrays(vectors, shard_rows=700, devices=[device])
    assert [shard.vectors.dtype for shard in search.shards] == [getattr(torch, np.dtype(dtype).name)] * 3
    assert_same_as_faiss(search.search(queries, 20), vectors, queries, 20)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_clustered_vectors_with_k_larger_than_a_block(dtype, device):
    vectors = clustered(3000, seed=1).astype(dtype)
    queries = clustered(30, seed=2)
    budget = 20_000  # a few dozen vectors per block: k = 100 spans several blocks of every shard
    q_block, v_block = plan_blocks(len(queries), 1100, DIM, 100, budget)
    assert v_block < 100 and block_bytes(q_block, v_block, DIM, 100) <= budget
    search = TorchFlatSearch.from_arrays(vectors, shard_rows=1100, devices=[device, "cpu"], work_bytes=budget)
    assert_same_as_faiss(search.search(queries, 100), vectors, queries, 100)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("k", "shard_rows"), [(75, 70), (30, 100), (7, 200)])
def test_ties_are_broken_by_row_across_blocks_and_shards(k, shard_rows, device):
    # 4 distinct vectors of small integers (exact scores in any summation order), each repeated 50
    # times in a shuffled layout: every score ties 50 ways, across blocks and shards, and (k < block)
    # at the cut of a block's top-k, where torch.topk picks among equal values arbitrarily.
    rng = np.random.default_rng(3)
    distinct = rng.integers(-2, 3, size=(4, DIM)).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(4), 50))
    vectors = distinct[labels]
    queries = rng.integers(-2, 3, size=(6, DIM)).astype(np.float32)
    search = TorchFlatSearch.from_arrays(vectors, shard_rows=shard_rows, devices=[device], work_bytes=20_000)
    rows, scores = search.search(queries, k)
    exact = queries @ vectors.T
    expected = np.lexsort((np.broadcast_to(np.arange(len(vectors)), exact.shape), -exact), axis=1)[:, :k]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(exact, expected, axis=1))


@pytest.mark.parametrize("device", DEVICES)
def test_block_top_keeps_the_lowest_columns_among_ties_at_the_cut(device):
    scores = torch.zeros(4, 100, device=device)
    scores[:, ::2] = 1.0  # 50 tied maxima; torch.topk on CPU returns an arbitrary 5 of them
    values, columns = block_top(scores, 5)
    assert columns.tolist() == [[0, 2, 4, 6, 8]] * 4 and (values == 1).all()


def test_fewer_vectors_than_k_are_padded():
    vectors = clustered(30, seed=4)
    queries = clustered(3, seed=5)
    rows, scores = TorchFlatSearch.from_arrays(vectors, 12, ["cpu"]).search(queries, 40)
    expected_rows, _ = faiss_flat(vectors, queries, 30)
    np.testing.assert_array_equal(rows[:, :30], expected_rows)
    assert (rows[:, 30:] == -1).all() and np.isneginf(scores[:, 30:]).all()


@pytest.mark.parametrize("device", DEVICES)
def test_store_shards_hold_float16_and_equal_the_in_memory_search(tmp_path: Path, device: str):
    vectors = clustered(1000, seed=6)
    spec = StoreSpec(num_rows=1000, dim=DIM, chunk_rows=300, model="synthetic", recipe={})
    store = EmbeddingStore.create_or_resume(tmp_path / "embeddings", spec)
    for chunk in range(spec.num_chunks):
        start, stop = spec.chunk_bounds(chunk)
        store.write_chunk(chunk, vectors[start:stop])
    # shard bounds that cut through chunks
    loaded = TorchFlatSearch.load(store, [(0, 450), (450, 1000)], [device])
    assert [tuple(shard.vectors.shape) for shard in loaded.shards] == [(450, DIM), (550, DIM)]
    assert loaded.resident_bytes == 1000 * DIM * 2
    stored = vectors.astype(np.float16)
    np.testing.assert_array_equal(torch.cat([s.vectors.cpu() for s in loaded.shards]).numpy(), stored)
    queries = clustered(10, seed=7)
    assert_same_as_faiss(loaded.search(queries, 15), stored, queries, 15)


def test_plan_blocks_stays_within_the_budget():
    for queries, vectors, dim, k, budget in [
        (10_000, 10_000_000, 1536, 1000, 2 << 30),
        (300, 5183, 384, 1000, 256 << 20),
        (5, 100, 8, 10, 10_000),
    ]:
        q_block, v_block = plan_blocks(queries, vectors, dim, k, budget)
        assert 1 <= q_block <= queries and 1 <= v_block <= vectors
        assert block_bytes(q_block, v_block, dim, k) <= budget
    # A large budget takes whole small shards in one block.
    assert plan_blocks(300, 5183, 384, 100, 1 << 30) == (300, 5183)
    with pytest.raises(Exception, match="working budget"):
        plan_blocks(10, 1000, 32, 10_000, 1000)


@pytest.mark.parametrize("device", DEVICES)
def test_exact_scores_equal_numpy_including_misses(device):
    vectors = clustered(500, seed=8).astype(np.float16).astype(np.float32)
    queries = clustered(20, seed=9)
    rows = np.random.default_rng(10).integers(0, 500, size=(20, 40))
    rows[3, 35:] = -1

    def fetch(wanted: np.ndarray) -> np.ndarray:
        return vectors[wanted]

    got = exact_scores(queries, rows, fetch, device, work_bytes=50_000)  # several query steps
    expected = np.einsum("qd,qkd->qk", queries, vectors[np.maximum(rows, 0)])
    expected[rows < 0] = -np.inf
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.isneginf(got[3, 35:]).all()


def test_fixed_blocks_pad_the_last_block_with_copies_of_its_last_row():
    values, labels = np.arange(10).reshape(5, 2), np.array([10, 11, 12, 13, 14])
    blocks = list(fixed_blocks(2, values, labels))
    assert [(start, count) for start, count, _ in blocks] == [(0, 2), (2, 2), (4, 1)]
    assert blocks[-1][2][0].tolist() == [[8, 9], [8, 9]] and blocks[-1][2][1].tolist() == [14, 14]


@pytest.mark.parametrize("device", DEVICES)
def test_a_querys_scores_do_not_depend_on_the_queries_searched_with_it(device):
    """At 1,024 dimensions a product's shape changes one query's sums (measured on CPU torch: 149 of the
    scores of 10 queries searched alone differed from theirs among 300); in fixed blocks none may."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((1500, 1024)).astype(np.float16)
    queries = rng.standard_normal((3 * QUERY_BLOCK + 5, 1024)).astype(np.float16).astype(np.float32)
    search = TorchFlatSearch.from_arrays(vectors, 700, [device])
    rows, scores = search.search(queries, 20)
    for start in (0, QUERY_BLOCK + 7, len(queries) - 10):
        alone_rows, alone_scores = search.search(queries[start : start + 10], 20)
        np.testing.assert_array_equal(alone_rows, rows[start : start + 10])
        assert alone_scores.tobytes() == scores[start : start + 10].tobytes()
    candidates = rows[:, :12]
    exact = exact_scores(queries, candidates, lambda unique: vectors[unique].astype(np.float32), device)
    alone = exact_scores(
        queries[5:9], candidates[5:9], lambda unique: vectors[unique].astype(np.float32), device
    )
    assert alone.tobytes() == exact[5:9].tobytes()
