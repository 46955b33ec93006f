from __future__ import annotations

import numpy as np

from models.batching import (
    length_order,
    pad_batch,
    restore_order,
    token_budget_batches,
    truncate_with_eos,
)


def test_truncate_with_eos_appends_exactly_once() -> None:
    assert truncate_with_eos([1, 2, 3], 5, 9) == [1, 2, 3, 9]
    assert truncate_with_eos([1, 2, 9], 5, 9) == [1, 2, 9]
    assert truncate_with_eos([1, 2, 3, 4, 5], 5, 9) == [1, 2, 3, 4, 9]
    assert truncate_with_eos([], 5, 9) == [9]


def test_length_order_is_longest_first_and_stable() -> None:
    assert length_order([5, 3, 8, 1]).tolist() == [2, 0, 1, 3]
    assert length_order([2, 4, 2, 4]).tolist() == [1, 3, 0, 2]


def test_token_budget_batches_respect_padded_tokens() -> None:
    lengths = [5, 3, 8, 1]
    batches = token_budget_batches(lengths, 16)
    assert [batch.tolist() for batch in batches] == [[2, 0], [1, 3]]  # 8*2 = 16; 3*2 = 6
    assert sum(max(lengths[i] for i in batch) * len(batch) for batch in batches) == 22
    assert [batch.tolist() for batch in token_budget_batches([100, 1, 1], 16)] == [[0], [1, 2]]


def test_equal_lengths_fill_the_budget() -> None:
    batches = token_budget_batches([4] * 10, 16)
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sum(4 * len(batch) for batch in batches) == 40  # equal lengths: no padding at all


def test_pad_batch_sides() -> None:
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_restore_order_inverts_the_batching() -> None:
    lengths = [5, 3, 8, 1]
    batches = token_budget_batches(lengths, 16)
    outputs = [np.array(lengths)[batch][:, None] * 10 for batch in batches]
    assert restore_order(batches, outputs).ravel().tolist() == [50, 30, 80, 10]
