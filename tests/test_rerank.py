"""Reranking in groups of queries, and resuming a killed rerank: only missing groups are scored again, and
the run written is byte-identical to an uninterrupted one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import LyreCli, bm25_index_and_run
from lyre.models.reranker import Reranker
from lyre.retrieval import rerank as rerank_module
from lyre.retrieval.options import RerankOptions, RerankRunOptions
from lyre.retrieval.rerank import query_groups
from lyre.retrieval.rerank_parts import GroupScores, parts_folder
from lyre.retrieval.run_files import rerank_run_file


def test_query_groups_bound_the_pairs_held_at_once() -> None:
    heads = {"a": ["1", "2", "3"], "b": ["4", "5"], "c": ["6"], "d": ["7", "8", "9", "10"]}
    assert query_groups(heads, 5) == [["a", "b"], ["c", "d"]]
    assert query_groups(heads, 2) == [["a"], ["b"], ["c"], ["d"]]  # one query over the bound goes alone
    assert query_groups({}, 5) == [[]]


def test_a_group_counts_only_with_its_record_and_the_same_key(tmp_path: Path) -> None:
    parts = GroupScores(tmp_path / "run.parts")
    scores = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    parts.save(7, "key-a", scores)
    loaded = parts.load(7, "key-a", 3)
    assert loaded is not None and loaded.tobytes() == scores.tobytes()
    assert parts.load(7, "key-b", 3) is None  # other queries, documents or reranker
    assert parts.load(7, "key-a", 4) is None
    assert parts.load(8, "key-a", 3) is None
    (tmp_path / "run.parts" / "group-000007.npy").write_bytes(b"\x93NUMPY truncated")
    assert parts.load(7, "key-a", 3) is None  # damaged by a kill: scored again
    assert parts.done() == [7]
    parts.remove()
    assert not (tmp_path / "run.parts").exists()


class Interrupted(Exception):
    """Stands for the process being killed between two groups."""


def test_a_killed_rerank_resumes_with_only_the_missing_groups(
    tmp_path: Path,
    lyre: LyreCli,
    sample: Path,
    qwen_reranker_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, first = bm25_index_and_run(tmp_path, lyre, sample)
    monkeypatch.setattr(rerank_module, "RERANK_GROUP_PAIRS", 20)  # 30 queries x 5 = 8 groups of 4 queries
    rerank = RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=5)
    queries = sample / "queries.tsv"

    def rerank_to(out: Path) -> None:
        rerank_run_file(index, queries, first, out, rerank, RerankRunOptions())

    uninterrupted = tmp_path / "whole.run"
    rerank_to(uninterrupted)
    assert not parts_folder(uninterrupted).exists()

    score_pairs = Reranker.score_pairs
    scored: list[int] = []

    def dying_after(groups: int) -> Callable[..., np.ndarray]:
        def score(self: Reranker, pairs: list[tuple[str, str]], progress: object = None) -> np.ndarray:
            if len(scored) == groups:
                raise Interrupted
            scored.append(len(pairs))
            return score_pairs(self, pairs, progress=progress)

        return score

    resumed = tmp_path / "resumed.run"
    monkeypatch.setattr(Reranker, "score_pairs", dying_after(3))
    with pytest.raises(Interrupted):
        rerank_to(resumed)
    assert not resumed.exists() and GroupScores(parts_folder(resumed)).done() == [0, 1, 2]

    scored.clear()
    monkeypatch.setattr(Reranker, "score_pairs", dying_after(10**6))
    rerank_to(resumed)
    assert len(scored) == 5 and sum(scored) == 30 * 5 - 3 * 20  # only the 5 missing groups
    assert resumed.read_bytes() == uninterrupted.read_bytes()
    assert not parts_folder(resumed).exists()
