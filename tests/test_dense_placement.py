"""Where a dense search runs (indexes/dense_placement.py): faiss-gpu where it sees a GPU, else torch where
torch sees one, else Faiss CPU; the first line says which and why, and what cannot be placed falls back."""

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

import dense_fixtures  # noqa: E402
from dense_fixtures import IVFPQ, numpy_top  # noqa: E402
from lyre.basics.errors import LyreError  # noqa: E402
from lyre.indexes import dense_placement  # noqa: E402
from lyre.indexes.dense_search import DenseIndex  # noqa: E402
from lyre.indexes.dense_stage import DenseOptions, build_dense  # noqa: E402

faiss.omp_set_num_threads(1)  # on a shared 2-core machine, OpenMP barriers cost more than they save

vectors = dense_fixtures.vectors  # the shared fixture
queries = dense_fixtures.queries  # the shared fixture
index_dir = dense_fixtures.index_dir  # the shared fixture


def test_the_engine_follows_the_machine_and_says_so(index_dir, capsys):
    """faiss-gpu where it sees a GPU, else torch where torch sees one, else Faiss CPU: whichever this
    machine offers, the first line names it (the suite passes with and without faiss-gpu or CUDA)."""
    import torch

    build_dense(index_dir, DenseOptions(index_type="flat"))
    faiss_gpus, why = dense_placement._gpu_support(faiss)
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


def test_torch_takes_the_gpu_when_faiss_cannot(index_dir, vectors, queries, monkeypatch, capsys):
    """Where faiss has no GPU support and torch sees a GPU, flat search and IVF-PQ's exact refine run
    on it with torch. The CPU device stands in for the GPU here; the code path is the same."""
    monkeypatch.setattr(
        dense_placement, "_gpu_support", lambda _faiss: (0, "faiss has no GPU support (faiss-cpu installed)")
    )
    monkeypatch.setattr(dense_placement, "_torch_gpus", lambda: ["cpu"])
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
    monkeypatch.setattr(dense_placement, "_gpu_support", lambda _faiss: (0, "faiss has no GPU support"))
    monkeypatch.setattr(dense_placement, "_torch_gpus", lambda: ["cuda:0"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 << 20, 80 << 30))  # 100 MiB free
    capsys.readouterr()
    index = DenseIndex.open(index_dir)
    err = capsys.readouterr().err
    assert "dense search: flat, Faiss CPU (faiss has no GPU support; torch refused: shard 0" in err
    assert "need 2.0 GiB on cuda:0 but 100.0 MiB are free" in err
    np.testing.assert_array_equal(index.search(queries, 10)[0], expected[0])


def test_failing_gpu_copy_falls_back_to_cpu(index_dir, queries, monkeypatch, capsys):
    build_dense(index_dir, DenseOptions(shard_rows=1500, **IVFPQ))
    expected = DenseIndex.open(index_dir, device="cpu").search(queries, 10)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("Error in allocMemory: cudaMalloc failed (out of memory)")

    monkeypatch.setattr(dense_placement, "_gpu_support", lambda _faiss: (2, ""))
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


def test_shards_are_spread_over_gpus(index_dir, queries, monkeypatch, capsys):
    """Three shards on two GPUs: 0, 1, 0. The CPU indexes stand in for the GPU copies, so the search runs
    the GPU path (fixed blocks of queries) with Faiss CPU underneath, and must find the CPU's results."""
    build_dense(index_dir, DenseOptions(shard_rows=1000, **IVFPQ))
    expected = DenseIndex.open(index_dir, device="cpu").search(queries, 10)
    placed = []

    def to_gpu(resources, gpu, index, options):
        placed.append((gpu, options.useFloat16))
        return index

    monkeypatch.setattr(dense_placement, "_gpu_support", lambda _faiss: (2, ""))
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", type("Options", (), {}), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    capsys.readouterr()
    index = DenseIndex.open(index_dir, device="cuda")
    assert placed == [(0, False), (1, False), (0, False)]
    assert "dense search: ivfpq, faiss-gpu on 2 GPU(s): 3 of 3 shards" in capsys.readouterr().err
    np.testing.assert_array_equal(index.search(queries, 10)[0], expected[0])
    np.testing.assert_array_equal(index.search(queries[:3], 10)[0], expected[0][:3])  # a padded block
    with pytest.raises(LyreError, match="at most 2048"):
        index.search(queries, 10, refine=3000)
