"""Token-budget batching: sort by length, cut batches by padded tokens, put results back in input order.

A fixed batch size either wastes the accelerator on short texts or runs out of memory on long ones, and
mixing lengths pays for padding. Batches cut by a budget of *padded* tokens (longest length x batch size)
keep the work per forward pass constant, and sorting makes the padding nearly zero. Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def truncate_with_eos(ids: Sequence[int], max_length: int, eos_id: int) -> list[int]:
    """``ids`` ending with exactly one appended ``eos_id``: kept as is when it already ends with it,
    otherwise cut to ``max_length - 1`` tokens and the EOS appended (a truncated text still ends in EOS)."""
    ids = list(ids)
    if ids and ids[-1] == eos_id and len(ids) <= max_length:
        return ids
    return [*ids[: max_length - 1], eos_id]


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices from longest to shortest (ties in input order): the longest batch runs first, so an
    out-of-memory shows up at once, and neighbours have nearly equal lengths."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def batch_rows(longest: int, token_budget: int) -> int:
    """Rows of a batch whose longest input has ``longest`` tokens: ``longest x rows <= token_budget``, at
    least one. Callers that adapt the budget (out-of-memory back-off) apply it batch by batch."""
    return max(token_budget // max(longest, 1), 1)


def token_budget_batches(lengths: Sequence[int], token_budget: int) -> list[np.ndarray]:
    """Batches of input indices, in length order, each with ``max length x size <= token_budget``
    (a single text longer than the budget forms a batch on its own)."""
    order = length_order(lengths)
    lengths = np.asarray(lengths, dtype=np.int64)
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        size = batch_rows(int(lengths[order[start]]), token_budget)  # sorted: the first is the longest
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays, padded on ``side`` ("left" or "right") to the longest."""
    width = max(len(sequence) for sequence in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        ids[row, span] = sequence
        mask[row, span] = 1
    return ids, mask


def restore_order(batches: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-batch outputs back into input order (``outputs[i]`` holds the rows of ``batches[i]``)."""
    total = sum(len(batch) for batch in batches)
    first = outputs[0]
    result = np.empty((total, *first.shape[1:]), dtype=first.dtype)
    for batch, output in zip(batches, outputs, strict=True):
        result[batch] = output
    return result
