"""Tuning IVF-PQ at build time (indexes/dense_tuning.py): exact search over the store is numpy's, and the
tuned nprobe reaches the recall target and is recorded."""

import numpy as np
import pytest

pytest.importorskip("faiss")

import dense_fixtures
from dense_fixtures import IVFPQ, clustered, numpy_top
from lyre.indexes.dense_search import DenseIndex
from lyre.indexes.dense_stage import DenseOptions, build_dense
from lyre.indexes.dense_tuning import exact_search, overlap_at
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.manifest import stage_record

vectors = dense_fixtures.vectors  # the shared fixture
index_dir = dense_fixtures.index_dir  # the shared fixture


def test_overlap_counts_the_true_rows_found():
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    found = np.array([[4, 3, 9, 8], [6, 7, 5, -1]])
    assert overlap_at(found, truth) == (2 / 4 + 2 / 2) / 2


def test_exact_search_over_the_store_matches_numpy(index_dir, vectors):
    queries = clustered(40, seed=2)
    rows, _ = exact_search(EmbeddingStore.open(index_dir / "embeddings"), queries, 50)
    np.testing.assert_array_equal(rows, numpy_top(vectors, queries, 50)[0])


def test_tuning_reaches_the_target_and_is_recorded(index_dir):
    result = build_dense(index_dir, DenseOptions(recall_target=0.9, **IVFPQ))
    params = DenseIndex.open(index_dir).params
    assert params.recall >= 0.9 and result.record.counts["recall"] == params.recall
    assert params.nprobe in (1, 2, 4, 8, 16) and params.tuning[-1]["nprobe"] == params.nprobe
    assert params.factory == "IVF16,PQ8x8" and params.bytes_per_vector > 8
    assert stage_record(index_dir, "dense")["counts"]["nprobe"] == params.nprobe
