"""Building the Faiss shards (indexes/dense_build.py): an interrupted build resumes from the shards it
wrote, and a build with other settings starts again."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from dense_fixtures import IVFPQ, N, clustered, write_store
from lyre.indexes.dense_build import shard_layout
from lyre.indexes.dense_search import DenseIndex
from lyre.indexes.dense_stage import DenseOptions, build_dense
from lyre.indexes.manifest import clear_stage


def test_shards_cover_every_row_once():
    assert [shard.rows for shard in shard_layout(2500, 1000)] == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert [shard.file for shard in shard_layout(10, 10)] == ["shard-000000.faiss"]


@pytest.mark.slow
def test_resume_rebuilds_only_missing_shards(tmp_path: Path, capsys):
    index_dir = write_store(tmp_path / "idx", clustered(N, seed=1))
    queries = clustered(40, seed=2)
    options = DenseOptions(shard_rows=1000, **IVFPQ)
    build_dense(index_dir, options)
    before = DenseIndex.open(index_dir).search(queries, 10)
    dense_dir = index_dir / "dense"
    kept = {p.name: p.stat().st_mtime_ns for p in dense_dir.glob("*.faiss") if p.name != "shard-000001.faiss"}
    (dense_dir / "shard-000001.faiss").unlink()
    clear_stage(index_dir, "dense")  # what a build killed while adding shard 1 leaves
    build_dense(index_dir, options)
    assert "dense: 2 of 3 shards already built; resuming" in capsys.readouterr().err
    assert {name: (dense_dir / name).stat().st_mtime_ns for name in kept} == kept
    after = DenseIndex.open(index_dir).search(queries, 10)
    np.testing.assert_array_equal(before[0], after[0])
    assert build_dense(index_dir, options).summary.startswith("dense: up to date")
    capsys.readouterr()
    rebuilt = build_dense(index_dir, DenseOptions(shard_rows=500, **IVFPQ))
    assert "other settings (num_shards, shard_rows); rebuilding" in capsys.readouterr().err
    assert rebuilt.record.counts["num_shards"] == 6 and len(list(dense_dir.glob("shard-*.faiss"))) == 6
