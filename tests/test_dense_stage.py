"""The dense stage (indexes/dense_stage.py): the index type chosen from the number of vectors and said, a
summary that counts what was built, and no dense index over an incomplete embedding store."""

import pytest

pytest.importorskip("faiss")

import dense_fixtures
from dense_fixtures import IVFPQ, write_store
from lyre.basics.errors import LyreError
from lyre.indexes.dense_stage import DenseOptions, build_dense
from lyre.indexes.manifest import stage_record

vectors = dense_fixtures.vectors  # the shared fixture
index_dir = dense_fixtures.index_dir  # the shared fixture


def test_auto_is_flat_for_a_small_corpus_and_says_so(index_dir, capsys):
    result = build_dense(index_dir)
    assert result.record.counts["index_type"] == "flat"
    assert "dense: flat index (3,000 vectors, below 100,000)" in capsys.readouterr().err
    assert result.summary == "dense: exact flat index over 3,000 vectors in 1 shard"


def test_an_ivfpq_summary_says_how_its_search_was_tuned(index_dir):
    result = build_dense(index_dir, DenseOptions(recall_target=0.9, **IVFPQ))
    counts = result.record.counts
    assert result.summary == (
        f"dense: IVF16,PQ8x8 over 3,000 vectors in 1 shard, {counts['bytes_per_vector']} bytes/vector; "
        f"nprobe {counts['nprobe']}, refine {counts['refine']} (overlap@100 with exact search "
        f"{counts['recall']:.4f} on build-time queries)"
    )
    assert stage_record(index_dir, "dense")["summary"] == result.summary.removeprefix("dense: ")


def test_incomplete_embeddings_are_refused(tmp_path, vectors):
    write_store(tmp_path / "idx", vectors, skip=(2,))
    with pytest.raises(LyreError, match="the embeddings stage is missing or incomplete"):
        build_dense(tmp_path / "idx")
    assert stage_record(tmp_path / "idx", "dense") is None
