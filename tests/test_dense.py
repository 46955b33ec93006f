import os
import shutil
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from lyre.basics.errors import LyreError  # noqa: E402
from lyre.indexes import dense  # noqa: E402
from lyre.indexes.dense import DenseIndex, DenseOptions, build_dense, exact_search, overlap_at, top_k  # noqa: E402
from lyre.indexes.embeddings import EmbeddingStore, StoreSpec  # noqa: E402
from lyre.indexes.manifest import clear_stage, record_stage, stage_record  # noqa: E402
from lyre.indexes.metadata import StageRecord  # noqa: E402
from lyre.models.recipes import builtin_recipe  # noqa: E402

faiss.omp_set_num_threads(1)  # on a shared 2-core machine, OpenMP barriers cost more than they save

N, DIM, CHUNK = 3000, 32, 500
IVFPQ = {"index_type": "ivfpq", "nlist": 16, "pq_m": 8, "tune_queries": 100}


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 centres: the structure IVF relies on, like text embeddings."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.6 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_store(index_dir: Path, vectors: np.ndarray, skip: tuple[int, ...] = ()) -> None:
    spec = StoreSpec(num_rows=len(vectors), dim=DIM, chunk_rows=CHUNK, model="synthetic", recipe={})
    store = EmbeddingStore.create_or_resume(index_dir / "embeddings", spec)
    for chunk in range(spec.num_chunks):
        if chunk not in skip:
            start, stop = spec.chunk_bounds(chunk)
            store.write_chunk(chunk, vectors[start:stop].astype(np.float16))
    if not skip:
        params = {"model": "synthetic", "recipe": builtin_recipe("lychee-embed").to_dict(), "dim": DIM}
        record_stage(
            index_dir, "embeddings", StageRecord("synthetic vectors", params, {"documents": len(vectors)})
        )


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(N, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(40, seed=2)


@pytest.fixture
def index_dir(tmp_path: Path, vectors: np.ndarray) -> Path:
    write_store(tmp_path / "idx", vectors)
    return tmp_path / "idx"


def numpy_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.astype(np.float16).astype(np.float32).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


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


def test_auto_is_flat_for_a_small_corpus_and_says_so(index_dir, capsys):
    assert build_dense(index_dir).record.counts["index_type"] == "flat"
    assert "dense: flat index (3000 vectors, below 100000)" in capsys.readouterr().err


def test_fewer_hits_than_k_are_padded(index_dir, queries):
    build_dense(index_dir, DenseOptions(index_type="flat"))
    rows, scores = DenseIndex.open(index_dir).search(queries[:2], N + 5)
    assert (rows[:, :N] >= 0).all() and (rows[:, N:] == -1).all()
    assert np.isneginf(scores[:, N:]).all()


def test_multi_shard_equals_single_shard_with_the_same_quantizer(tmp_path, vectors, queries):
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    write_store(sharded, vectors)
    write_store(single, vectors)
    build_dense(sharded, DenseOptions(shard_rows=700, **IVFPQ))
    (single / "dense").mkdir()
    shutil.copy(sharded / "dense" / "trained.faiss", single / "dense" / "trained.faiss")
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


def test_tuning_reaches_the_target_and_is_recorded(index_dir):
    result = build_dense(index_dir, DenseOptions(recall_target=0.9, **IVFPQ))
    params = DenseIndex.open(index_dir).params
    assert params.recall >= 0.9 and result.record.counts["recall"] == params.recall
    assert params.nprobe in (1, 2, 4, 8, 16) and params.tuning[-1]["nprobe"] == params.nprobe
    assert params.factory == "IVF16,PQ8x8" and params.bytes_per_vector > 8
    assert stage_record(index_dir, "dense")["counts"]["nprobe"] == params.nprobe
    assert result.summary.startswith("dense: IVF16,PQ8x8 over 3000 vectors in 1 shard(s)")


def test_exact_search_over_the_store_matches_numpy(index_dir, vectors, queries):
    rows, _ = exact_search(EmbeddingStore.open(index_dir / "embeddings"), queries, 50)
    np.testing.assert_array_equal(rows, numpy_top(vectors, queries, 50)[0])


def test_incomplete_embeddings_are_refused(tmp_path, vectors):
    write_store(tmp_path / "idx", vectors, skip=(2,))
    with pytest.raises(LyreError, match="the embeddings stage is missing or incomplete"):
        build_dense(tmp_path / "idx")
    assert stage_record(tmp_path / "idx", "dense") is None


def test_resume_rebuilds_only_missing_shards(index_dir, queries, capsys):
    options = DenseOptions(shard_rows=1000, **IVFPQ)
    build_dense(index_dir, options)
    before = DenseIndex.open(index_dir).search(queries, 10)
    dense_dir = index_dir / "dense"
    kept = {p.name: p.stat().st_mtime_ns for p in dense_dir.glob("*.faiss") if p.name != "shard-000001.faiss"}
    os.remove(dense_dir / "shard-000001.faiss")
    clear_stage(index_dir, "dense")  # what a build killed while adding shard 1 leaves
    build_dense(index_dir, options)
    assert {name: (dense_dir / name).stat().st_mtime_ns for name in kept} == kept
    after = DenseIndex.open(index_dir).search(queries, 10)
    np.testing.assert_array_equal(before[0], after[0])
    assert build_dense(index_dir, options).summary.startswith("dense: up to date")
    capsys.readouterr()
    rebuilt = build_dense(index_dir, DenseOptions(shard_rows=500, **IVFPQ))
    assert "other settings (num_shards, shard_rows); rebuilding" in capsys.readouterr().err
    assert rebuilt.record.counts["num_shards"] == 6 and len(list(dense_dir.glob("shard-*.faiss"))) == 6


def test_the_engine_follows_the_machine_and_says_so(index_dir, capsys):
    """faiss-gpu where it sees a GPU, else torch where torch sees one, else Faiss CPU: whichever this
    machine offers, the first line names it (the suite passes with and without faiss-gpu or CUDA)."""
    import torch

    build_dense(index_dir, DenseOptions(index_type="flat"))
    faiss_gpus, why = dense._gpu_support(faiss)
    DenseIndex.open(index_dir, device="auto")
    err = capsys.readouterr().err
    if faiss_gpus:
        assert f"dense search: flat, faiss-gpu on {min(faiss_gpus, 1)} GPU(s): 1 of 1 shards" in err
    elif torch.cuda.is_available():
        assert f"dense search: flat, torch on cuda:0 ({why})" in err
    else:
        assert f"dense search: flat, Faiss CPU ({why})" in err and "faiss has no GPU support" in why
        with pytest.raises(LyreError, match=r"faiss has no GPU support.*install faiss-gpu-cu12"):
            DenseIndex.open(index_dir, device="cuda")


def test_unknown_device_or_engine_is_refused(index_dir):
    build_dense(index_dir, DenseOptions(index_type="flat"))
    with pytest.raises(ValueError, match="device 'gpu': use one of auto, cpu, cuda"):
        DenseIndex.open(index_dir, device="gpu")
    with pytest.raises(ValueError, match="engine 'numpy': use one of auto, faiss, torch"):
        DenseIndex.open(index_dir, engine="numpy")


def test_torch_flat_search_equals_faiss_flat(index_dir, vectors, queries, capsys):
    build_dense(index_dir, DenseOptions(index_type="flat", shard_rows=1100))
    expected_rows, expected_scores = DenseIndex.open(index_dir, device="cpu").search(queries, 50)
    capsys.readouterr()
    index = DenseIndex.open(index_dir, device="cpu", engine="torch")
    assert "dense search: flat, torch on cpu (engine torch asked for)" in capsys.readouterr().err
    assert index.shards == [] and len(index.torch_flat.shards) == 3
    rows, scores = index.search(queries, 50)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)
    assert (rows == expected_rows).mean() > 0.99  # only float32 near-ties may swap (none expected here)
    np.testing.assert_array_equal(rows, expected_rows)
    rows, scores = index.search(queries[:2], N + 5)  # more than the index holds: padded like Faiss
    assert (rows[:, :N] >= 0).all() and (rows[:, N:] == -1).all() and np.isneginf(scores[:, N:]).all()


def test_torch_takes_the_gpu_when_faiss_cannot(index_dir, vectors, queries, monkeypatch, capsys):
    """Where faiss has no GPU support and torch sees a GPU, flat search and IVF-PQ's exact refine run
    on it with torch. The CPU device stands in for the GPU here; the code path is the same."""
    monkeypatch.setattr(
        dense, "_gpu_support", lambda _faiss: (0, "faiss has no GPU support (faiss-cpu installed)")
    )
    monkeypatch.setattr(dense, "_torch_gpus", lambda: ["cpu"])
    build_dense(index_dir, DenseOptions(index_type="flat", shard_rows=1100))
    capsys.readouterr()
    index = DenseIndex.open(index_dir)
    assert (
        "dense search: flat, torch on cpu (faiss has no GPU support (faiss-cpu installed))"
        in capsys.readouterr().err
    )
    np.testing.assert_array_equal(index.search(queries, 10)[0], numpy_top(vectors, queries, 10)[0])

    build_dense(index_dir, DenseOptions(**IVFPQ, nprobe=4, refine=100))
    expected = DenseIndex.open(index_dir, device="cpu").search(queries, 20)
    capsys.readouterr()
    index = DenseIndex.open(index_dir)
    assert (
        "dense search: ivfpq, Faiss CPU (faiss has no GPU support (faiss-cpu installed)); "
        "exact refine with torch on cpu" in capsys.readouterr().err
    )
    assert index.refine_device == "cpu" and index.torch_flat is None
    rows, scores = index.search(queries, 20)
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=0, atol=1e-5)


def test_vectors_that_do_not_fit_the_gpu_stay_on_faiss_cpu(index_dir, queries, monkeypatch, capsys):
    import torch

    build_dense(index_dir, DenseOptions(index_type="flat"))
    expected = DenseIndex.open(index_dir, device="cpu").search(queries, 10)
    monkeypatch.setattr(dense, "_gpu_support", lambda _faiss: (0, "faiss has no GPU support"))
    monkeypatch.setattr(dense, "_torch_gpus", lambda: ["cuda:0"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 << 20, 80 << 30))  # 100 MiB free
    capsys.readouterr()
    index = DenseIndex.open(index_dir)
    err = capsys.readouterr().err
    assert "dense search: flat, Faiss CPU (faiss has no GPU support; torch refused: shard 0" in err
    assert "need 2.0 GiB on cuda:0 but 0.1 GiB are free" in err
    np.testing.assert_array_equal(index.search(queries, 10)[0], expected[0])


def test_failing_gpu_copy_falls_back_to_cpu(index_dir, queries, monkeypatch, capsys):
    build_dense(index_dir, DenseOptions(shard_rows=1500, **IVFPQ))
    expected = DenseIndex.open(index_dir, device="cpu").search(queries, 10)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("Error in allocMemory: cudaMalloc failed (out of memory)")

    monkeypatch.setattr(dense, "_gpu_support", lambda _faiss: (2, ""))
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", type("Options", (), {}), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", out_of_memory, raising=False)
    capsys.readouterr()
    index = DenseIndex.open(index_dir, device="auto")
    err = capsys.readouterr().err
    assert "dense search: ivfpq, faiss-gpu on 2 GPU(s): 0 of 2 shards" in err
    assert "2 on Faiss CPU because the GPU copy failed" in err
    assert "out of memory" in err
    np.testing.assert_array_equal(index.search(queries, 10)[0], expected[0])


def test_bad_queries_are_refused(index_dir):
    build_dense(index_dir, DenseOptions(index_type="flat"))
    with pytest.raises(LyreError, match="needs \\[n, 32\\]"):
        DenseIndex.open(index_dir).search(np.zeros((2, 5), dtype=np.float32), 10)


def test_shards_are_spread_over_gpus(index_dir, queries, monkeypatch, capsys):
    build_dense(index_dir, DenseOptions(shard_rows=1000, **IVFPQ))
    expected = DenseIndex.open(index_dir, device="cpu").search(queries, 10)
    placed = []

    def to_gpu(resources, gpu, index, options):
        placed.append((gpu, options.useFloat16))
        return index  # stands in for the GPU copy; search then runs the same code path

    monkeypatch.setattr(dense, "_gpu_support", lambda _faiss: (2, ""))
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", type("Options", (), {}), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    capsys.readouterr()
    index = DenseIndex.open(index_dir, device="cuda")
    assert placed == [(0, False), (1, False), (0, False)]
    assert "dense search: ivfpq, faiss-gpu on 2 GPU(s): 3 of 3 shards" in capsys.readouterr().err
    np.testing.assert_array_equal(index.search(queries, 10)[0], expected[0])
    with pytest.raises(LyreError, match="at most 2048"):
        index.search(queries, 10, refine=3000)
