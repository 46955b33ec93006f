"""The dense encoder: texts -> L2-normalised float32 vectors under an explicit recipe.

Pooling reads the position of the last (or first) *real* token from the attention mask, whichever side
was padded, and position ids count real tokens only, so a text means the same in any batch. Queries go
further: their vectors are cached and must not depend on their neighbours even in the last bit, so they
run in the invariant batch layouts of :mod:`models.batching` (every query's batch shape a function of its
own length). Documents are encoded once each, with the other documents of their chunk, in token-budget
batches over length-sorted inputs; on CUDA, decoder models run padding-free packed batches instead (see
:mod:`models.packing`); on the CPU, where sorted padded batches already waste little and a packed row's
block mask costs more than it saves, the padded path stays. Long texts are cut before tokenizing only
where no token the model reads can change (:mod:`models.token_prefix`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.numbers import count
from lyre.basics.progress import ProgressSink
from lyre.models.batching import Batch, invariant_layout, pad_batch, run_batches, truncate_with_eos
from lyre.models.loading import (
    LYCHEE_EMBED,
    cpu_threads,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    resolve_model,
)
from lyre.models.packing import ROW_TOKENS, can_pack, pack, pack_rows, packed_hidden, pool_packed
from lyre.models.recipes import EmbedRecipe, resolve_recipe
from lyre.models.token_prefix import token_prefixes

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = LYCHEE_EMBED
CPU_TOKEN_BUDGET = 8192
CUDA_TOKEN_BUDGET = 65536


def model_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LyreError(f"{path}: unreadable model config ({error}); re-download the model folder") from None


def model_width(config: dict[str, Any]) -> int:
    """The size of the model's hidden state, i.e. of its full embedding."""
    for key in ("hidden_size", "d_model", "dim"):
        if config.get(key):
            return int(config[key])
    raise LyreError("the model config names no hidden_size; is this a text encoder?")


def check_dim(dim: int | None, width: int) -> int:
    """The output size: the model's width, or a Matryoshka prefix of it (multiples of 32)."""
    if dim is None or dim == width:
        return width
    if dim % 32 or not 32 <= dim <= width:
        raise OptionError("dim", dim, f"use a multiple of 32 between 32 and the model's {width}")
    return dim


def resolve_embedder(
    name_or_path: str | Path, recipe: str | EmbedRecipe | None = None, **overrides: Any
) -> tuple[Path, EmbedRecipe, int]:
    """(model folder, effective recipe, output dim) without loading weights, to plan an encoding job.

    The effective recipe carries the output dim (the model's width unless a Matryoshka prefix is asked
    for), so a recipe and its hash are the same wherever the model is resolved: in the index's record, in
    `lyre doctor`'s report, and for the queries of a search."""
    folder = resolve_model(name_or_path)
    config = model_config(folder)
    effective = resolve_recipe(str(name_or_path), folder, config, recipe, **overrides)
    dim = check_dim(effective.dim, model_width(config))
    return folder, replace(effective, dim=dim), dim


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One float32 vector per row from the token states, reading real-token positions from ``mask``
    so the result is the same under left and right padding."""
    import torch

    hidden = hidden.float()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "last-token":
        positions = torch.arange(mask.shape[1], device=mask.device)
        return hidden[rows, (mask * positions).argmax(dim=1)]
    if pooling == "cls":
        return hidden[rows, mask.argmax(dim=1)]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def recipe_eos_id(tokenizer: Any, recipe: EmbedRecipe) -> int | None:
    """The id of the EOS token the recipe appends to every text, or None when it appends none."""
    if not recipe.ensure_eos:
        return None
    token = recipe.eos_token or tokenizer.eos_token
    token_id = tokenizer.convert_tokens_to_ids(token) if token else None
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise LyreError(
            f"the recipe needs EOS token {token!r}, which the tokenizer does not know; "
            f"set {opt('pooling')} mean"
        )
    return int(token_id)


class Embedder:
    """A loaded model plus its recipe. Build with :meth:`from_pretrained`.

    ``packing``: run padding-free packed batches (None: on CUDA for models that support it)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        recipe: EmbedRecipe,
        *,
        name: str,
        dim: int,
        token_budget: int,
        packing: bool | None = None,
    ) -> None:
        import inspect

        self.model = model
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.name = name
        self.dim = dim
        self.token_budget = token_budget
        self.device = next(model.parameters()).device
        self._pass_positions = "position_ids" in inspect.signature(model.forward).parameters
        self.packing = can_pack(model) and (self.device.type == "cuda" if packing is None else packing)
        self.eos_id = recipe_eos_id(tokenizer, recipe)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_id or 0)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        *,
        recipe: str | EmbedRecipe | None = None,
        device: str | None = None,
        token_budget: int | None = None,
        num_threads: int | None = None,
        packing: bool | None = None,
        **overrides: Any,
    ) -> Embedder:
        """Load model and tokenizer and resolve the recipe (built-in < folder files < ``overrides``:
        pooling, max_length, query_template, query_task, dim, normalize, dtype, ...)."""
        import torch

        folder, effective, dim = resolve_embedder(name_or_path, recipe, **overrides)
        chosen = pick_device(device)
        if chosen.type == "cpu":
            torch.set_num_threads(num_threads or cpu_threads())
        model = load_model(folder, device=chosen, dtype=pick_dtype(chosen, effective.dtype))
        tokenizer = load_tokenizer(folder, effective.padding_side)
        name = str(name_or_path) if not Path(str(name_or_path)).expanduser().is_dir() else str(folder)
        budget = token_budget or (CUDA_TOKEN_BUDGET if chosen.type == "cuda" else CPU_TOKEN_BUDGET)
        return cls(model, tokenizer, effective, name=name, dim=dim, token_budget=budget, packing=packing)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (no padding), truncated to max_length, ending in one EOS when required.
        A long text is cut first where the tokens up to max_length stay those of the whole text
        (:func:`~models.token_prefix.token_prefixes`)."""
        if not texts:
            return []
        limit = self.recipe.max_length
        encoded = self.tokenizer(
            token_prefixes(self.tokenizer, texts, limit),
            add_special_tokens=True,
            truncation=True,
            max_length=limit,
        )["input_ids"]
        if self.eos_id is None:
            return [list(ids) for ids in encoded]
        return [truncate_with_eos(ids, limit, self.eos_id) for ids in encoded]

    def encode_queries(
        self, texts: Sequence[str], task: str | None = None, progress: ProgressSink | None = None
    ) -> np.ndarray:
        """Query vectors; the instruction (``task`` or the recipe's) is applied to queries only. A query's
        vector is the same, bit for bit, whatever queries it is encoded with (see :mod:`models.batching`)."""
        return self.encode_ids(
            self.tokenize([self.recipe.format_query(text, task) for text in texts]), progress, invariant=True
        )

    def encode_documents(self, texts: Sequence[str], progress: ProgressSink | None = None) -> np.ndarray:
        return self.encode_ids(self.tokenize([self.recipe.format_document(text) for text in texts]), progress)

    def encode_ids(
        self,
        sequences: Sequence[Sequence[int]],
        progress: ProgressSink | None = None,
        *,
        invariant: bool = False,
    ) -> np.ndarray:
        """float32 [n, dim] for tokenized inputs, in input order, batched by the token budget (longest
        first, or packed rows); ``progress`` advances after each batch. Out of memory halves the budget.
        ``invariant``: each vector independent of the other inputs, bit for bit (for cached queries)."""
        vectors = np.zeros((len(sequences), self.dim), dtype=np.float32)
        if not sequences:
            return vectors
        lengths = [len(sequence) for sequence in sequences]

        def done(indices: list[int], batch_vectors: np.ndarray) -> None:
            vectors[indices] = batch_vectors
            if progress is not None:
                progress.advance(len(indices), sum(lengths[i] for i in indices))

        if self.packing and not invariant:
            rows = pack_rows(lengths, max(ROW_TOKENS, self.recipe.max_length))

            def forward_packed(batch: Batch) -> None:
                chosen = [rows[r] for r in batch.inputs]
                indices = [i for row in chosen for i in row]
                done(indices, self._forward_packed([[sequences[i] for i in row] for row in chosen]))

            row_lengths = [sum(lengths[i] for i in row) for row in rows]
            self.token_budget = run_batches(
                row_lengths, self.token_budget, forward_packed, too_long=self._too_long
            )
            return vectors

        def forward(batch: Batch) -> None:
            computed = self._forward([sequences[i] for i in batch.rows], batch.width)
            done(batch.inputs, computed[: len(batch.inputs)])

        self.token_budget = run_batches(
            lengths,
            self.token_budget,
            forward,
            too_long=self._too_long,
            layout=invariant_layout(self.device.type) if invariant else "padded",
            max_width=self.recipe.max_length,
            head_per_row=False,  # pooled from the token states: every product runs over rows x width
        )
        return vectors

    @staticmethod
    def _too_long(length: int) -> LyreError:
        return LyreError(
            f"out of memory on a single text of {count(length, 'tokens')}; lower {opt('max_length')}"
        )

    def _finish(self, pooled: torch.Tensor) -> np.ndarray:
        """The output vectors: the Matryoshka prefix, normalised when the recipe says so, on the host."""
        import torch

        vectors = pooled[:, : self.dim]
        if self.recipe.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def _forward(self, sequences: list[Sequence[int]], width: int | None = None) -> np.ndarray:
        import torch

        ids, mask = pad_batch(sequences, self.pad_id, self.recipe.padding_side, width)
        input_ids = torch.from_numpy(ids).to(self.device)
        attention_mask = torch.from_numpy(mask).to(self.device)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._pass_positions:
            inputs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
            return self._finish(pool(hidden, attention_mask, self.recipe.pooling))

    def _forward_packed(self, rows: list[list[Sequence[int]]]) -> np.ndarray:
        """Vectors of the sequences of ``rows``, row by row, from one packed forward pass."""
        import torch

        batch = pack(rows, self.pad_id)
        with torch.inference_mode():
            hidden = packed_hidden(self.model, batch, self.device)
            return self._finish(pool_packed(hidden, batch, self.recipe.pooling))
