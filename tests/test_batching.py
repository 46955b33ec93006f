from __future__ import annotations

import pytest
import torch
from lyre.basics.errors import LyreError
from lyre.models.batching import (
    CHARS_PER_TOKEN_BOUND,
    cut_text,
    is_out_of_memory,
    length_order,
    pad_batch,
    run_batches,
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


def test_pad_batch_sides() -> None:
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def too_long(length: int) -> LyreError:
    return LyreError(f"one input of {length} tokens does not fit")


def batches_of(lengths: list[int], budget: int) -> tuple[list[list[int]], int]:
    seen: list[list[int]] = []
    final = run_batches(lengths, budget, seen.append, too_long=too_long)
    return seen, final


def test_batches_respect_padded_tokens_longest_first() -> None:
    assert batches_of([5, 3, 8, 1], 16) == ([[2, 0], [1, 3]], 16)  # 8 x 2 = 16; 3 x 2 = 6
    assert batches_of([100, 1, 1], 16) == ([[0], [1, 2]], 16)  # longer than the budget: alone
    equal, _ = batches_of([4] * 10, 16)
    assert [len(batch) for batch in equal] == [4, 4, 2]  # equal lengths fill the budget exactly
    assert sorted(i for batch in equal for i in batch) == list(range(10))


class FitsTwoRows:
    """A forward pass behind a memory limit: more than two rows raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.attempts: list[int] = []
        self.done: list[list[int]] = []

    def __call__(self, batch: list[int]) -> None:
        self.attempts.append(len(batch))
        if len(batch) > 2:
            raise self.error
        self.done.append(batch)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: not enough memory"),
        MemoryError(),
    ],
    ids=["cuda", "cpu-allocator", "python"],
)
def test_out_of_memory_halves_the_budget_and_retries(error: BaseException) -> None:
    forward = FitsTwoRows(error)
    final = run_batches([4] * 7, 40, forward, too_long=too_long)
    assert forward.attempts == [7, 5, 2, 2, 2, 1]  # budget 40 -> 20 -> 10 rows of 4 tokens: 10, 5, 2
    assert final == 10
    assert sorted(i for batch in forward.done for i in batch) == list(range(7))


def test_a_single_input_out_of_memory_is_one_line() -> None:
    def never_fits(batch: list[int]) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(LyreError, match="one input of 9 tokens does not fit"):
        run_batches([9, 3], 100, never_fits, too_long=too_long)


def test_other_errors_pass_through() -> None:
    def broken(batch: list[int]) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches([1, 2], 100, broken, too_long=too_long)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_cut_text_keeps_what_max_tokens_can_reach() -> None:
    text = "x" * 10_000
    assert cut_text(text, 8) == "x" * (8 * CHARS_PER_TOKEN_BOUND)
    assert cut_text("short", 8) == "short"
