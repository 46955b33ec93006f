"""Token-budget batching: the one batch loop of the embedder and the reranker, and the input bounds.

A fixed batch size either wastes the accelerator on short texts or runs out of memory on long ones, and
mixing lengths pays for padding. Batches cut by a budget of *padded* tokens (longest length x batch size)
keep the work per forward pass constant, and sorting by length makes the padding nearly zero. Running out
of memory halves the budget and retries the batch instead of losing the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.progress import say

CHARS_PER_TOKEN_BOUND = 32
"""Characters a text may have per token it can keep. Tokens of natural text and code average 3 to 5
characters and rarely exceed 16, so text beyond ``max_tokens x 32`` characters can never reach the model:
it is dropped before tokenizing, which otherwise costs memory and time in proportion to the whole text
(one 6.8 MB document took encoding to 1.6 GB)."""


def cut_text(text: str, max_tokens: int) -> str:
    """``text`` without the characters that cannot fall within its first ``max_tokens`` tokens."""
    return text[: max_tokens * CHARS_PER_TOKEN_BOUND]


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


def run_batches(
    lengths: Sequence[int],
    token_budget: int,
    forward: Callable[[list[int]], None],
    *,
    too_long: Callable[[int], LyreError],
) -> int:
    """Call ``forward`` on batches of input indices covering every input once, longest first, each batch
    within ``token_budget`` padded tokens. ``forward`` computes and stores its batch's results (and
    reports progress) only once it succeeds. On out-of-memory the budget is halved and the batch retried;
    a single input that does not fit raises ``too_long(its length)``. Returns the budget that held, so
    the caller starts there next time."""
    pending = deque(int(i) for i in length_order(lengths))
    while pending:
        # Cut lazily: after a back-off, the batches still to come shrink too.
        rows = min(batch_rows(int(lengths[pending[0]]), token_budget), len(pending))
        batch = [pending.popleft() for _ in range(rows)]
        try:
            forward(batch)
        except (RuntimeError, MemoryError) as error:
            if not (isinstance(error, MemoryError) or is_out_of_memory(error)):
                raise
            _release_cached_memory()
            if len(batch) == 1:
                raise too_long(int(lengths[batch[0]])) from None
            token_budget = max(token_budget // 2, 1)
            say(
                f"out of memory on {len(batch)} inputs of up to {lengths[batch[0]]} tokens; "
                f"token budget halved to {token_budget}"
            )
            pending.extendleft(reversed(batch))
    return token_budget


def _release_cached_memory() -> None:
    """Return the failed batch's cached blocks to the GPU before retrying smaller."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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
