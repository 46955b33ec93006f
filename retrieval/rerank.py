"""Reranking a run: the top ``depth`` of each query rescored, the untouched tail spliced below.

Queries go to the reranker in groups of about :data:`RERANK_GROUP_PAIRS` pairs: its token-budget batches
then mix queries (full batches even when some queries have few candidates), memory stays bounded by one
group, and each finished group can be kept on disk (:mod:`retrieval.rerank_parts`) so a killed run
resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from lyre.basics import progress
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.formats.records import Query, Run, document_text
from lyre.formats.runs import rank_order
from lyre.retrieval.cache import PairLookup, SearchCache, cached_pair_scores, look_up_pairs
from lyre.retrieval.rerank_parts import GroupScores, group_key
from lyre.retrieval.rerank_workers import GroupScorer, Pairs
from lyre.retrieval.splice import splice

RERANK_GROUP_PAIRS = 8192
"""Pairs prepared at a time: token ids and texts of a group are held in memory, so reranking 10k queries
x 100 documents stays bounded; groups are large enough that token-budget batches still mix queries."""


def query_groups(heads: dict[str, list[str]], max_pairs: int) -> list[list[str]]:
    """Consecutive queries packed into groups of at most ``max_pairs`` pairs (a longer query goes alone)."""
    groups: list[list[str]] = [[]]
    pairs = 0
    for qid, head in heads.items():
        if pairs and pairs + len(head) > max_pairs:
            groups.append([])
            pairs = 0
        groups[-1].append(qid)
        pairs += len(head)
    return groups


def _group_pairs(
    group: list[str], heads: dict[str, list[str]], texts: dict[str, str], store: Any
) -> tuple[list[str], list[tuple[str, str]]]:
    """The docids of a group and its (query text, document text) pairs, in the group's order."""
    docids = [docid for qid in group for docid in heads[qid]]
    rows = store.rows_of(docids)
    if (rows < 0).any():
        unknown = docids[int(np.flatnonzero(rows < 0)[0])]
        raise LyreError(
            f"document {unknown!r} of the run is not in the index; rerank with the index it came from"
        )
    documents = iter(store.fetch(rows))
    return docids, [(texts[qid], document_text(next(documents))) for qid in group for _ in heads[qid]]


def _group_key(
    group: list[str], heads: dict[str, list[str]], texts: dict[str, str], store: Any, identity: str
) -> str:
    """The key a group's saved scores are kept under (:func:`retrieval.rerank_parts.group_key`), made from
    the texts the reranker will read: a group saved by an earlier run over other texts (another index
    with the same document ids) is not reused. Reads the group's documents (then dropped), so only one
    group's texts are held at a time."""
    docids, pairs = _group_pairs(group, heads, texts, store)
    return group_key(identity, [qid for qid in group for _ in heads[qid]], docids, pairs)


def _score_group(
    group: list[str],
    heads: dict[str, list[str]],
    texts: dict[str, str],
    store: Any,
    reranker: Any,
    sink: progress.ProgressSink,
    pair_cache: SearchCache | None = None,
    identity: str = "",
) -> np.ndarray:
    docids, pairs = _group_pairs(group, heads, texts, store)
    scores, cached = cached_pair_scores(
        pair_cache, identity, pairs, docids, lambda todo: reranker.score_pairs(todo, progress=sink)
    )
    sink.advance(cached, 0)  # pairs scored by an earlier search
    return scores


def _score_on_workers(
    numbers: list[int],
    groups: list[list[str]],
    heads: dict[str, list[str]],
    texts: dict[str, str],
    store: Any,
    scorer: GroupScorer,
    sink: progress.ProgressSink,
    pair_cache: SearchCache | None,
    identity: str,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(number, scores)`` of the groups ``numbers``, as they finish: each group's cached pairs are
    read here and only the others go to the workers, which send back their scores to be put in place
    (and kept in the cache); a group whose pairs are all cached needs no worker.

    Groups are looked up as the workers ask for more (a few ahead), so only those in flight are held."""
    waiting: dict[int, PairLookup] = {}
    cached: list[tuple[int, np.ndarray]] = []

    def to_score() -> Iterator[tuple[int, Pairs]]:
        for number in numbers:
            docids, pairs = _group_pairs(groups[number], heads, texts, store)
            lookup = look_up_pairs(pair_cache, identity, pairs, docids)
            sink.advance(lookup.cached, 0)  # pairs scored by an earlier command
            if lookup.missing:
                waiting[number] = lookup
                yield number, lookup.missing_pairs(pairs)
            else:
                cached.append((number, lookup.scores))

    for number, computed in scorer.score_groups(to_score(), sink):
        while cached:
            yield cached.pop(0)
        yield number, waiting.pop(number).fill(pair_cache, computed)
    yield from cached


def rerank(
    run: Run,
    queries: Sequence[Query],
    store: Any,
    reranker: Any,
    depth: int,
    *,
    parts: GroupScores | None = None,
    identity: str = "",
    pair_cache: SearchCache | None = None,
    group_pairs: int | None = None,
) -> Run:
    """``run`` with the top ``depth`` of every query that has a text in ``queries`` reranked.

    Queries without a text keep their first-stage list (callers decide whether that is allowed). With
    ``parts``, groups finished by an earlier, interrupted call with the same ``identity`` (the reranker's
    fingerprint and settings) and the same query and document texts are read instead of scored again;
    the scores, and so the run, are the same.
    With ``pair_cache``, only pairs this reranker has not scored in an earlier command are scored.
    ``reranker`` may be replicas in worker processes or Ray actors (:mod:`retrieval.rerank_workers`):
    the uncached pairs of the missing groups are then scored in parallel, each group kept as it
    finishes and put in place by number.
    ``group_pairs``: pairs per group (default :data:`RERANK_GROUP_PAIRS`).
    """
    texts = {query.qid: query.text for query in queries}
    ordered = {qid: rank_order(docs) for qid, docs in run.items()}
    heads = {qid: [docid for docid, _ in ordered[qid][:depth]] for qid in ordered if qid in texts}
    groups = query_groups(heads, group_pairs or RERANK_GROUP_PAIRS)
    sizes = [sum(len(heads[qid]) for qid in group) for group in groups]
    keys = [_group_key(group, heads, texts, store, identity) for group in groups] if parts is not None else []
    saved: dict[int, np.ndarray] = {}
    if parts is not None:
        for number, (key, size) in enumerate(zip(keys, sizes, strict=True)):
            scores = parts.load(number, key, size)
            if scores is not None:
                saved[number] = scores
    if parts is not None and saved:
        progress.say(
            f"rerank: {count(len(saved))} of {count(len(groups), 'groups')} already scored in {parts.folder}"
        )
    reranked: Run = {}
    todo = sum(size for number, size in enumerate(sizes) if number not in saved)
    with progress.TokenProgress(todo, "rerank", unit="pair") as sink:
        if isinstance(reranker, GroupScorer):  # workers: the uncached pairs of the missing groups
            missing = [number for number in range(len(groups)) if number not in saved]
            finished = _score_on_workers(
                missing, groups, heads, texts, store, reranker, sink, pair_cache, identity
            )
            for number, scores in finished:
                if parts is not None:
                    parts.save(number, keys[number], scores)
                saved[number] = scores
        for number, group in enumerate(groups):
            scores = saved.get(number)
            if scores is None:
                scores = _score_group(group, heads, texts, store, reranker, sink, pair_cache, identity)
                if parts is not None:
                    parts.save(number, keys[number], scores)
            values = iter(scores.tolist())
            for qid in group:
                reranked[qid] = dict(splice(ordered[qid], {docid: next(values) for docid in heads[qid]}))
    return {qid: reranked.get(qid, docs) for qid, docs in run.items()}
