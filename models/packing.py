"""Padding-free batches: several token sequences packed into one row, each attending only to itself.

Padded batches spend compute on pad tokens and, on a GPU, on every row's full width; packing lays the
sequences of a batch end to end instead. Each sequence gets its own position ids (0, 1, 2, ... from its
first token), and transformers turns position ids that restart inside a row, with no 2D attention mask,
into a block-diagonal (document) causal mask for the attention implementation the model runs: a
materialised 4D mask for SDPA, a sparse ``BlockMask`` for FlexAttention (which skips the blocks between
documents), variable-length kernels for FlashAttention. A sequence's hidden states are therefore those it
has alone, and pooling reads each sequence's own span.

Only decoder models whose transformers implementation builds its mask from position ids take this path
(:data:`PACKABLE_MODEL_TYPES`); encoders such as BERT keep padded batches. Only documents take it: a
packed batch's shape (and so the kernels that run it) changes with the sequences packed together, so a
sequence's vector may differ in the last bits with its neighbours, which is harmless for a document
encoded once but not for a cached query (queries use the invariant layouts of :mod:`models.batching`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PACKABLE_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})
"""Model types whose causal mask transformers derives from restarting position ids (tested: qwen2)."""

ROW_TOKENS = 4096
"""Tokens per packed row. SDPA materialises a row x row mask and attends across the whole row, so rows
stay a few sequences long; the token budget decides how many rows run together."""


def can_pack(model: Any) -> bool:
    """Whether ``model`` honours packed position ids (see :data:`PACKABLE_MODEL_TYPES`)."""
    return getattr(model.config, "model_type", None) in PACKABLE_MODEL_TYPES


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Input indices grouped into rows of at most ``capacity`` tokens (an input longer than that fills a
    row alone). Each row takes the longest input left, then the shortest ones while they fit, so a row's
    unused room is smaller than any input still waiting."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable").tolist()
    rows: list[list[int]] = []
    longest, shortest = 0, len(order) - 1
    while longest <= shortest:
        row = [order[longest]]
        used = lengths[order[longest]]
        longest += 1
        while longest <= shortest and used + lengths[order[shortest]] <= capacity:
            row.append(order[shortest])
            used += lengths[order[shortest]]
            shortest -= 1
        rows.append(row)
    return rows


@dataclass(frozen=True)
class PackedBatch:
    """Rows of packed sequences: ``input_ids`` and ``position_ids`` [rows, width], and for each sequence
    (in the order given) the row it lies in, its first column and its length. A row's unused tail holds
    pad tokens numbered as one more sequence, which nothing reads."""

    input_ids: np.ndarray
    position_ids: np.ndarray
    row: np.ndarray
    start: np.ndarray
    length: np.ndarray


def pack(rows: Sequence[Sequence[Sequence[int]]], pad_id: int) -> PackedBatch:
    """Lay each row's sequences end to end; sequences are reported row by row, in row order."""
    width = max(sum(len(sequence) for sequence in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    where: list[tuple[int, int, int]] = []
    for number, row in enumerate(rows):
        column = 0
        for sequence in row:
            ids[number, column : column + len(sequence)] = sequence
            positions[number, column : column + len(sequence)] = np.arange(len(sequence))
            where.append((number, column, len(sequence)))
            column += len(sequence)
        positions[number, column:] = np.arange(width - column)
    row_of, start, length = (np.array(values, dtype=np.int64) for values in zip(*where, strict=True))
    return PackedBatch(ids, positions, row_of, start, length)


def pool_packed(hidden: torch.Tensor, batch: PackedBatch, pooling: str) -> torch.Tensor:
    """One float32 vector per packed sequence: its last token ("last-token"), its first ("cls"), or the
    mean of its tokens ("mean")."""
    import torch

    device = hidden.device
    rows = torch.from_numpy(batch.row).to(device)
    starts = torch.from_numpy(batch.start).to(device)
    lengths = torch.from_numpy(batch.length).to(device)
    if pooling == "last-token":
        return hidden[rows, starts + lengths - 1].float()
    if pooling == "cls":
        return hidden[rows, starts].float()
    width = hidden.shape[1]
    flat = hidden.reshape(-1, hidden.shape[-1]).float()
    owner = torch.full((flat.shape[0],), -1, dtype=torch.int64, device=device)
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    offsets = torch.arange(int(lengths.sum()), device=device) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths
    )
    owner[torch.repeat_interleave(rows * width + starts, lengths) + offsets] = sequence
    real = owner >= 0
    sums = torch.zeros(len(lengths), flat.shape[1], dtype=flat.dtype, device=device)
    sums.index_add_(0, owner[real], flat[real])
    return sums / lengths.unsqueeze(1).to(flat.dtype)


def packed_hidden(model: Any, batch: PackedBatch, device: torch.device) -> torch.Tensor:
    """The model's last hidden states for a packed batch: position ids and no attention mask, which is
    what makes transformers build the per-sequence mask; no cache, which would disable that."""
    import torch

    input_ids = torch.from_numpy(batch.input_ids).to(device, non_blocking=True)
    position_ids = torch.from_numpy(batch.position_ids).to(device, non_blocking=True)
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
