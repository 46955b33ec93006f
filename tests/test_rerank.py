"""Reranking in groups of queries, and resuming a killed rerank: only missing groups are scored again, and
the run written is byte-identical to an uninterrupted one."""

from __future__ import annotations

import json
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
from lyre.retrieval.rerank_run import rerank_run_file


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


SCORE_PAIRS = Reranker.score_pairs
"""The real scoring, kept before any test replaces it."""


def dying_after(scored: list[int], groups: int) -> Callable[..., np.ndarray]:
    """``Reranker.score_pairs`` that appends each group's pair count to ``scored`` and raises
    :class:`Interrupted` once ``groups`` groups are scored (the process killed between two groups)."""

    def score(self: Reranker, pairs: list[tuple[str, str]], progress: object = None) -> np.ndarray:
        if len(scored) == groups:
            raise Interrupted
        scored.append(len(pairs))
        return SCORE_PAIRS(self, pairs, progress=progress)

    return score


@pytest.mark.slow
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

    scored: list[int] = []

    resumed = tmp_path / "resumed.run"
    monkeypatch.setattr(Reranker, "score_pairs", dying_after(scored, 3))
    with pytest.raises(Interrupted):
        rerank_to(resumed)
    assert not resumed.exists() and GroupScores(parts_folder(resumed)).done() == [0, 1, 2]

    scored.clear()
    monkeypatch.setattr(Reranker, "score_pairs", dying_after(scored, 10**6))
    rerank_to(resumed)
    assert len(scored) == 5 and sum(scored) == 30 * 5 - 3 * 20  # only the 5 missing groups
    assert resumed.read_bytes() == uninterrupted.read_bytes()
    assert not parts_folder(resumed).exists()


def same_ids_other_texts(corpus: Path, out: Path) -> Path:
    """``corpus`` with each document's title and text moved to the next one: the same ids, other texts."""
    documents = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    with open(out, "w", encoding="utf-8") as handle:
        for document, source in zip(documents, documents[1:] + documents[:1], strict=True):
            handle.write(json.dumps({**source, "_id": document["_id"]}) + "\n")
    return out


@pytest.fixture(scope="module")
def two_indexes(
    tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path
) -> tuple[Path, Path, Path]:
    """(index A, a BM25 run of A, index B): the sample's BM25 index and one of the same ids, other texts."""
    folder = tmp_path_factory.mktemp("two-indexes")
    first_index, first = bm25_index_and_run(folder, lyre, sample)
    other_index = folder / "other"
    other_corpus = same_ids_other_texts(sample / "corpus.jsonl", folder / "other.jsonl")
    lyre("-q", "index", other_corpus, "--out", other_index, "--bm25-only")
    return first_index, first, other_index


@pytest.mark.slow
def test_a_rerank_resumed_over_another_index_scores_every_group_again(
    tmp_path: Path,
    two_indexes: tuple[Path, Path, Path],
    sample: Path,
    qwen_reranker_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed while reranking over index A, rerun with the same out over index B (the same document ids,
    other texts): no group scored over A's texts is reused; the run is B's own."""
    first_index, first, other_index = two_indexes
    monkeypatch.setattr(rerank_module, "RERANK_GROUP_PAIRS", 8)  # 30 queries x 2 = 8 groups of 4 queries
    rerank = RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=2)
    queries = sample / "queries.tsv"

    def rerank_to(index: Path, out: Path) -> None:
        rerank_run_file(index, queries, first, out, rerank, RerankRunOptions())

    over_other = tmp_path / "other.run"
    rerank_to(other_index, over_other)

    scored: list[int] = []

    out = tmp_path / "mixed.run"
    monkeypatch.setattr(Reranker, "score_pairs", dying_after(scored, 3))
    with pytest.raises(Interrupted):
        rerank_to(first_index, out)
    assert GroupScores(parts_folder(out)).done() == [0, 1, 2]

    scored.clear()
    monkeypatch.setattr(Reranker, "score_pairs", dying_after(scored, 10**6))
    rerank_to(other_index, out)
    assert len(scored) == 8 and sum(scored) == 30 * 2  # every group, none read from A's
    assert out.read_bytes() == over_other.read_bytes()


@pytest.mark.slow
def test_the_command_line_does_not_resume_groups_scored_over_other_texts(
    tmp_path: Path,
    two_indexes: tuple[Path, Path, Path],
    lyre: LyreCli,
    sample: Path,
    qwen_reranker_folder: Path,
) -> None:
    """The same through `lyre rerank`: the groups a rerank over index A finished (the command was killed
    before writing its run) are not read by the rerank over index B writing to the same out."""
    from lyre.formats.queries import read_queries
    from lyre.formats.runs import read_run
    from lyre.indexes.docstore import DocStore
    from lyre.indexes.manifest import DOCSTORE
    from lyre.retrieval.plan import load_reranker, locate_reranker
    from lyre.retrieval.rerank import rerank

    first_index, first, other_index = two_indexes
    options = RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=1)
    reranking = ["--rerank-model", qwen_reranker_folder, "--rerank-depth", "1", "--no-cache"]

    def rerank_args(index: Path, out: Path) -> list[str | Path]:
        return ["rerank", "--index", index, "--queries", sample / "queries.tsv", "--run", first, "--out", out]

    out = tmp_path / "x.run"
    reranker = load_reranker(locate_reranker(options, optional=False), options)
    parts = GroupScores(parts_folder(out))
    store = DocStore.open(first_index / DOCSTORE)
    rerank(read_run(first), read_queries(sample / "queries.tsv"), store, reranker.model, 1, parts=parts,
           identity=reranker.identity)  # fmt: skip
    assert parts.done() == [0]  # the whole rerank over A, as `lyre rerank` keeps it until the run is written

    resumed = lyre(*rerank_args(other_index, out), *reranking)  # not quiet: a resume is said
    fresh = tmp_path / "fresh.run"
    lyre("-q", *rerank_args(other_index, fresh), *reranking)
    assert "rerank: " in resumed.stderr and "already scored" not in resumed.stderr
    assert out.read_bytes() == fresh.read_bytes()
