"""Token-budget batching: the one batch loop of the embedder and the reranker, and its batch shapes.

A fixed batch size either wastes the accelerator on short texts or runs out of memory on long ones, and
mixing lengths pays for padding. Batches cut by a budget of *padded* tokens (width x rows) keep the work
per forward pass constant. Running out of memory halves the budget and retries the batch instead of
losing the run.

**Batch invariance.** A cached query vector or rerank score must equal the one computed with other
neighbours, bit for bit. Floating-point results depend on the batch's shape, not only on the row: padding
changes the width every reduction runs over and the attention kernel (transformers drops the mask of a
batch without padding), and math libraries pick kernels by the number of rows of a matrix product
(measured with MKL on AVX-512: a row's product differs between 7 rows and 8, and up to 171 rows with 64
threads, but never when the row count is a multiple of 4). So the *invariant* layouts give every input a
shape that depends on its own length alone:

- the width is the input's length rounded up to a multiple of 4 (up to :data:`SHORT_WIDTHS` tokens) or the
  next step of a ladder strictly above it (at most 12.5% padding), and a batch holds inputs of one width
  that are all padded or all not (so the attention mask is there or not whatever the neighbours);
- ``by-length`` (CPU): as many rows as the budget allows, rounded up by repeating the batch's first
  input so that every matrix product has a multiple of 4 rows: rows x width for the layers, and the
  row count itself for a model with a head over one vector per row (the rerankers); one row where the
  budget fits fewer. Exact on the CPU: tested bitwise for any neighbours and any split
  (``tests/test_batching.py``, ``tests/test_embedder.py``, ``tests/test_reranker.py``,
  ``tests/test_faults_batch_invariance.py``), and the matrix-product property with MKL at 1 to 64
  threads; another BLAS whose kernels group rows otherwise would need another quantum;
- ``by-length-fixed`` (GPUs): :data:`FIXED_ROWS` rows per batch of a width, filled by repetition, so every
  batch of a width has one shape and the GPU library picks one kernel for it. Likely but not guaranteed:
  a kernel may still treat rows differently by their position (split-K or stream-K reductions).

Either way the bits are those of one machine: another device, GPU model, driver, library version, dtype
or thread count is another computation. After an out-of-memory back-off the rows per batch shrink, so later
batches may differ in the last bits from a run that had the memory. Document encoding keeps the
``padded`` layout (longest first, padded to the batch's longest, or packed rows on CUDA): each document is
encoded once, with the other documents of its chunk, whichever slice or rerun encodes the chunk.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.basics.progress import say

Layout = Literal["padded", "by-length", "by-length-fixed"]
ROW_QUANTUM = 4
"""Every matrix product of an invariant batch has a multiple of this many rows, where MKL's kernels give
each row the same bits whatever the row count."""
FIXED_ROWS = 8
"""Rows of every ``by-length-fixed`` batch (fewer when the budget fits fewer): small, so a width with few
inputs repeats few rows, and enough to keep a GPU busy on inputs of hundreds of tokens."""
SHORT_WIDTHS = 64
"""Inputs up to this many tokens run at their length rounded up to a multiple of :data:`ROW_QUANTUM`;
longer ones share the widths of a ladder."""


@dataclass(frozen=True)
class Batch:
    """One forward pass: the ``inputs`` it computes (indices, in row order), then ``fill`` rows repeating
    ``inputs[0]`` whose results are dropped, all padded to ``width`` (None: the longest input's)."""

    inputs: list[int]
    fill: int = 0
    width: int | None = None
    rows: list[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", [*self.inputs, *[self.inputs[0]] * self.fill])


def ladder_width(length: int, max_width: int) -> int:
    """The width an input of ``length`` tokens runs at in the invariant layouts: up to
    :data:`SHORT_WIDTHS`, its length rounded up to a multiple of :data:`ROW_QUANTUM`; beyond, the next
    multiple of an eighth of its power of two strictly above it (at most 12.5% padding); never more than
    ``max_width`` (an input of ``max_width`` tokens runs unpadded)."""
    if length >= max_width:
        return length
    if length <= SHORT_WIDTHS:
        return min(-(-length // ROW_QUANTUM) * ROW_QUANTUM, max_width)
    step = 1 << (length.bit_length() - 4)
    return min((length // step + 1) * step, max_width)


def row_quantum(width: int, head_per_row: bool) -> int:
    """The row counts an invariant batch of ``width`` may have are multiples of this: so that rows x width
    is a multiple of :data:`ROW_QUANTUM`, and the row count itself where the model ends in a head over one
    vector per row (a language-model or classification head)."""
    return ROW_QUANTUM if head_per_row else ROW_QUANTUM // math.gcd(width, ROW_QUANTUM)


def invariant_rows(width: int, token_budget: int, quantum: int) -> int:
    """The most rows an invariant batch of ``width`` may have: a multiple of ``quantum`` within the
    budget, or one row where the budget fits fewer than that."""
    fit = token_budget // max(width, 1)
    return fit - fit % quantum if fit >= quantum else 1


def invariant_layout(device_type: str) -> Layout:
    """``by-length`` on the CPU, ``by-length-fixed`` on accelerators (which pick kernels by shape)."""
    return "by-length" if device_type == "cpu" else "by-length-fixed"


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
    least one."""
    return max(token_budget // max(longest, 1), 1)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure: CUDA's ``OutOfMemoryError``, or the plain
    ``RuntimeError`` a CPU allocation failure raises ("DefaultCPUAllocator: not enough memory")."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "DefaultCPUAllocator" in message
    )


def shape_queues(
    lengths: Sequence[int], layout: Layout, max_width: int
) -> list[tuple[int | None, deque[int]]]:
    """The inputs in the order they run, as (width, queue) per shape: one queue, longest first, for
    ``padded``; one per (ladder width, padded or not), widest first, inputs in order, otherwise."""
    if layout == "padded":
        return [(None, deque(int(i) for i in length_order(lengths)))]
    shapes: dict[tuple[int, bool], deque[int]] = {}
    for index, length in enumerate(lengths):
        width = ladder_width(int(length), max_width)
        shapes.setdefault((width, width > length), deque()).append(index)
    return [(width, shapes[width, padded]) for width, padded in sorted(shapes, reverse=True)]


def next_batch(
    queue: deque[int],
    width: int | None,
    lengths: Sequence[int],
    token_budget: int,
    layout: Layout,
    head_per_row: bool,
) -> Batch:
    """Take the next batch off ``queue`` (see the module docstring for the shapes)."""
    if width is None:
        rows = min(batch_rows(int(lengths[queue[0]]), token_budget), len(queue))
        return Batch([queue.popleft() for _ in range(rows)])
    quantum = row_quantum(width, head_per_row)
    rows = invariant_rows(width, token_budget, quantum)
    if layout == "by-length-fixed":
        rows = min(rows, FIXED_ROWS)
    elif rows > 1:
        rows = min(rows, -(-len(queue) // quantum) * quantum)
    inputs = [queue.popleft() for _ in range(min(rows, len(queue)))]
    return Batch(inputs, rows - len(inputs), width)


def run_batches(
    lengths: Sequence[int],
    token_budget: int,
    forward: Callable[[Batch], None],
    *,
    too_long: Callable[[int], LyreError],
    layout: Layout = "padded",
    max_width: int = 0,
    head_per_row: bool = True,
) -> int:
    """Call ``forward`` on batches covering every input once, longest first, each within
    ``token_budget`` padded tokens, shaped by ``layout`` (for the invariant layouts, ``max_width`` is the
    longest an input can be, and ``head_per_row`` says whether the model ends in a head over one vector
    per row, see :func:`row_quantum`). ``forward`` runs ``batch.rows`` and computes and stores the results of
    ``batch.inputs`` (and reports progress) only once it succeeds. On out-of-memory the budget is halved
    and the batch retried; a single row that does not fit raises ``too_long(its length)``. Returns the
    budget that held, so the caller starts there next time."""
    for width, queue in shape_queues(lengths, layout, max(max_width, max(lengths, default=0))):
        while queue:
            # Cut lazily: after a back-off, the batches still to come shrink too.
            batch = next_batch(queue, width, lengths, token_budget, layout, head_per_row)
            try:
                forward(batch)
            except (RuntimeError, MemoryError) as error:
                if not (isinstance(error, MemoryError) or is_out_of_memory(error)):
                    raise
                _release_cached_memory()
                longest = max(int(lengths[i]) for i in batch.inputs)
                if len(batch.rows) == 1:
                    raise too_long(longest) from None
                token_budget = max(token_budget // 2, 1)
                say(
                    f"out of memory on a batch of {count(len(batch.rows), 'inputs')} of up to "
                    f"{count(longest, 'tokens')}; token budget halved to {count(token_budget)}"
                )
                queue.extendleft(reversed(batch.inputs))
    return token_budget


def _release_cached_memory() -> None:
    """Return the failed batch's cached blocks to the GPU before retrying smaller."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays, padded on ``side`` ("left" or "right") to ``width``
    (None: the longest sequence)."""
    width = max(len(sequence) for sequence in sequences) if width is None else width
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        ids[row, span] = sequence
        mask[row, span] = 1
    return ids, mask
