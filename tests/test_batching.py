from __future__ import annotations

import random

import pytest
import torch
from lyre.basics.errors import LyreError
from lyre.models.batching import (
    FIXED_ROWS,
    ROW_QUANTUM,
    SHORT_WIDTHS,
    Batch,
    Layout,
    invariant_layout,
    invariant_rows,
    is_out_of_memory,
    ladder_width,
    length_order,
    pad_batch,
    row_quantum,
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
    ids, mask = pad_batch([[1, 2], [4]], pad_id=0, side="left", width=4)
    assert ids.tolist() == [[0, 0, 1, 2], [0, 0, 0, 4]] and mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]


def too_long(length: int) -> LyreError:
    return LyreError(f"one input of {length} tokens does not fit")


def batches_of(lengths: list[int], budget: int) -> tuple[list[list[int]], int]:
    seen: list[Batch] = []
    final = run_batches(lengths, budget, seen.append, too_long=too_long)
    assert all(batch.fill == 0 and batch.width is None and batch.rows == batch.inputs for batch in seen)
    return [batch.inputs for batch in seen], final


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

    def __call__(self, batch: Batch) -> None:
        self.attempts.append(len(batch.rows))
        if len(batch.rows) > 2:
            raise self.error
        self.done.append(batch.inputs)


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
    def never_fits(batch: Batch) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(LyreError, match="one input of 9 tokens does not fit"):
        run_batches([9, 3], 100, never_fits, too_long=too_long)


def test_other_errors_pass_through() -> None:
    def broken(batch: Batch) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches([1, 2], 100, broken, too_long=too_long)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


# --- invariant layouts ------------------------------------------------------------------------------


def test_ladder_widths_round_short_inputs_to_four_and_pad_longer_ones_by_at_most_an_eighth() -> None:
    assert [ladder_width(length, 512) for length in (1, 4, 17, SHORT_WIDTHS)] == [4, 4, 20, SHORT_WIDTHS]
    assert [ladder_width(length, 512) for length in (65, 71, 72, 127, 128, 300, 511)] == [
        72, 72, 80, 128, 144, 320, 512,
    ]  # fmt: skip
    assert ladder_width(512, 512) == 512  # at the longest an input can be: exact
    assert ladder_width(500, 510) == 510  # the ladder's step above is capped
    for length in range(SHORT_WIDTHS + 1, 2000):
        width = ladder_width(length, 4096)
        assert length < width <= length * 9 // 8 + 1  # at least one pad token, at most 12.5% padding


def test_invariant_rows_come_in_quanta_within_the_budget_or_alone() -> None:
    assert [row_quantum(width, head_per_row=True) for width in (8, 10, 11)] == [4, 4, 4]
    assert [row_quantum(width, head_per_row=False) for width in (8, 10, 11)] == [1, 2, 4]
    assert invariant_rows(100, 1000, 4) == 8  # 10 fit: the multiple of 4 below
    assert invariant_rows(100, 1000, 1) == 10
    assert invariant_rows(100, 399, 4) == 1  # 3 fit: alone
    assert invariant_rows(4096, 4096, 1) == 1
    assert invariant_layout("cpu") == "by-length" and invariant_layout("cuda") == "by-length-fixed"


def planned(
    lengths: list[int], budget: int, layout: Layout, max_width: int = 512, head_per_row: bool = True
) -> list[Batch]:
    seen: list[Batch] = []
    run_batches(
        lengths, budget, seen.append, too_long=too_long, layout=layout, max_width=max_width,
        head_per_row=head_per_row,
    )  # fmt: skip
    computed = sorted(i for batch in seen for i in batch.inputs)
    assert computed == list(range(len(lengths)))  # every input once
    return seen


def test_by_length_batches_hold_one_width_in_multiples_of_four_rows() -> None:
    lengths = [5, 5, 5, 5, 5, 7, 70, 71, 72, 300]
    seen = planned(lengths, 1000, "by-length")
    shapes = [(batch.width, batch.inputs, batch.fill) for batch in seen]
    assert shapes == [
        (320, [9], 0),  # 1000 // 320 = 3 rows fit: alone
        (80, [8], 3),  # 72 pads to 80
        (72, [6, 7], 2),  # 70 and 71 pad to 72
        (8, [0, 1, 2, 3, 4, 5], 2),  # 5 and 7 pad to 8: 6 inputs, 8 rows
    ]
    assert seen[1].rows == [8, 8, 8, 8]  # filled with the first input


def test_without_a_head_per_row_only_rows_times_width_must_be_a_multiple_of_four() -> None:
    seen = planned([5, 7, 8, 10], 1000, "by-length", max_width=10, head_per_row=False)
    assert [(batch.width, batch.inputs, batch.fill) for batch in seen] == [
        (10, [3], 1),  # at max_width, unpadded: 2 rows x 10
        (8, [0, 1], 0),  # padded to 8
        (8, [2], 0),  # unpadded: a batch of its own, one row
    ]


def test_by_length_fixed_batches_always_have_the_same_rows_per_width() -> None:
    lengths = [5] * 11 + [7]
    seen = planned(lengths, 65536, "by-length-fixed")
    assert [(batch.width, len(batch.inputs), len(batch.rows)) for batch in seen] == [
        (8, 8, FIXED_ROWS),  # all pad to 8
        (8, 4, FIXED_ROWS),
    ]


@pytest.mark.parametrize("head_per_row", [True, False])
@pytest.mark.parametrize("layout", ["by-length", "by-length-fixed"])
def test_an_inputs_width_and_company_depend_on_its_own_length_only(
    layout: Layout, head_per_row: bool
) -> None:
    """Over random subsets, an input always runs at one width, with inputs of that width and kind only,
    in a batch whose matrix products have a multiple of 4 rows (or one row); with fixed rows, always in
    the same shape."""
    chooser = random.Random(7)
    lengths = [chooser.choice([3, 9, 40, 64, 65, 66, 100, 130, 255, 256, 511, 512]) for _ in range(200)]
    shapes: dict[int, set[tuple[int | None, int]]] = {}
    for _ in range(40):
        subset = chooser.sample(range(len(lengths)), chooser.randint(1, 60))
        for batch in planned([lengths[i] for i in subset], 4096, layout, head_per_row=head_per_row):
            kinds = {
                (ladder_width(lengths[subset[i]], 512), lengths[subset[i]] < batch.width)
                for i in batch.inputs
            }
            assert len(kinds) == 1 and batch.width == kinds.pop()[0]
            products = len(batch.rows) if head_per_row else len(batch.rows) * batch.width
            assert len(batch.rows) == 1 or products % ROW_QUANTUM == 0
            assert len(batch.rows) * batch.width <= 4096 or len(batch.rows) == 1
            for i in batch.inputs:
                shapes.setdefault(lengths[subset[i]], set()).add((batch.width, len(batch.rows)))
    widths = {length: {width for width, _ in seen} for length, seen in shapes.items()}
    assert all(len(seen) == 1 for seen in widths.values())
    if layout == "by-length-fixed":
        assert all(len(seen) == 1 for seen in shapes.values())


def test_out_of_memory_in_an_invariant_layout_shrinks_to_one_row() -> None:
    forward = FitsTwoRows(torch.OutOfMemoryError("CUDA out of memory"))
    final = run_batches([10] * 5, 1000, forward, too_long=too_long, layout="by-length", max_width=64)
    assert forward.attempts == [8, 8, 8, 8, 4, 1, 1, 1, 1, 1]  # 1000, 500, 250, 125, 62 tokens; 31: alone
    assert final == 31
    assert sorted(i for batch in forward.done for i in batch) == list(range(5))


def test_a_linear_layer_gives_a_row_the_same_bits_in_any_invariant_batch() -> None:
    """The property the invariant layouts rely on, checked on this machine's BLAS: token vectors through a
    linear layer and mean-pooled give the same bits alone and among any neighbours of their width."""
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 256)
    lengths = [int(length) for length in torch.randint(1, 90, (40,), generator=generator)]
    inputs = [torch.randn(length, 64, generator=generator) for length in lengths]

    def run(indices: list[int], layout: Layout) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}

        def forward(batch: Batch) -> None:
            width = batch.width or max(lengths[indices[i]] for i in batch.rows)
            padded = torch.zeros(len(batch.rows), width, 64)
            for row, i in enumerate(batch.rows):
                padded[row, : lengths[indices[i]]] = inputs[indices[i]]
            with torch.inference_mode():
                hidden = layer(padded)
            for row, i in enumerate(batch.inputs):
                out[indices[i]] = hidden[row, : lengths[indices[i]]].mean(0)

        run_batches(
            [lengths[i] for i in indices], 2048, forward, too_long=too_long, layout=layout, max_width=128,
            head_per_row=False,
        )  # fmt: skip
        return out

    chooser = random.Random(3)
    for layout in ("by-length", "by-length-fixed"):
        alone = {i: run([i], layout)[i] for i in range(len(inputs))}
        for _ in range(10):
            subset = chooser.sample(range(len(inputs)), chooser.randint(2, 30))
            for i, vector in run(subset, layout).items():
                assert torch.equal(vector, alone[i]), (layout, lengths[i])
