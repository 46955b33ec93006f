"""The dense encoder: texts -> L2-normalised float32 vectors under an explicit recipe.

Written so that a text's vector does not depend on its batch: pooling reads the position of the last (or
first) *real* token from the attention mask, whichever side was padded, and position ids count real tokens
only. Batches are cut by a token budget over length-sorted inputs (see :mod:`models.batching`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from basics.errors import LyreError
from basics.progress import say
from models.batching import batch_rows, length_order, pad_batch, restore_order, truncate_with_eos
from models.loading import (
    cpu_threads,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    resolve_model,
)
from models.recipes import EmbedRecipe, resolve_recipe

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "vec-ai/lychee-embed"
CPU_TOKEN_BUDGET = 8192
CUDA_TOKEN_BUDGET = 65536

Progress = Callable[[int, int], None]
"""Called after each batch with (texts done, tokens done) of that batch."""


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
    if dim is None:
        return width
    if dim % 32 or not 32 <= dim <= width:
        raise LyreError(f"--dim {dim} is not a multiple of 32 between 32 and the model's {width}")
    return dim


def resolve_embedder(
    name_or_path: str | Path, recipe: str | EmbedRecipe | None = None, **overrides: Any
) -> tuple[Path, EmbedRecipe, int]:
    """(model folder, effective recipe, output dim) without loading weights, to plan an encoding job."""
    folder = resolve_model(name_or_path)
    config = model_config(folder)
    effective = resolve_recipe(str(name_or_path), folder, config, recipe, **overrides)
    return folder, effective, check_dim(effective.dim, model_width(config))


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


class Embedder:
    """A loaded model plus its recipe. Build with :meth:`from_pretrained`."""

    def __init__(
        self, model: Any, tokenizer: Any, recipe: EmbedRecipe, *, name: str, dim: int, token_budget: int
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
        self.eos_id = self._eos_id()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_id or 0)

    def _eos_id(self) -> int | None:
        if not self.recipe.ensure_eos:
            return None
        token = self.recipe.eos_token or self.tokenizer.eos_token
        token_id = self.tokenizer.convert_tokens_to_ids(token) if token else None
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise LyreError(
                f"the recipe needs EOS token {token!r}, which the tokenizer does not know; "
                "pass --pooling mean"
            )
        return int(token_id)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        *,
        recipe: str | EmbedRecipe | None = None,
        device: str | None = None,
        token_budget: int | None = None,
        num_threads: int | None = None,
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
        return cls(model, tokenizer, effective, name=name, dim=dim, token_budget=budget)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (no padding), truncated to max_length, ending in one EOS when required."""
        if not texts:
            return []
        encoded = self.tokenizer(
            list(texts), add_special_tokens=True, truncation=True, max_length=self.recipe.max_length
        )["input_ids"]
        if self.eos_id is None:
            return [list(ids) for ids in encoded]
        return [truncate_with_eos(ids, self.recipe.max_length, self.eos_id) for ids in encoded]

    def encode_queries(
        self, texts: Sequence[str], task: str | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        """Query vectors; the instruction (``task`` or the recipe's) is applied to queries only."""
        return self.encode_ids(
            self.tokenize([self.recipe.format_query(text, task) for text in texts]), progress
        )

    def encode_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self.encode_ids(self.tokenize([self.recipe.format_document(text) for text in texts]), progress)

    def encode_ids(self, sequences: Sequence[Sequence[int]], progress: Progress | None = None) -> np.ndarray:
        """float32 [n, dim] for tokenized inputs, longest first in token-budget batches, in input order.
        On CUDA out-of-memory the budget is halved and the batch retried."""
        import torch

        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int64)
        order = length_order(lengths)
        batches: list[np.ndarray] = []
        outputs: list[np.ndarray] = []
        start = 0
        while start < len(order):
            batch = order[start : start + batch_rows(int(lengths[order[start]]), self.token_budget)]
            try:
                outputs.append(self._forward([sequences[i] for i in batch]))
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise LyreError(
                        f"out of GPU memory on a single text of {lengths[batch[0]]} tokens; "
                        "lower --max-length"
                    ) from None
                self.token_budget = max(self.token_budget // 2, 1)
                torch.cuda.empty_cache()
                say(
                    f"out of GPU memory with {len(batch)} texts of {lengths[batch[0]]} tokens; "
                    f"token budget now {self.token_budget}"
                )
                continue
            batches.append(batch)
            start += len(batch)
            if progress is not None:
                progress(len(batch), int(lengths[batch].sum()))
        return restore_order(batches, outputs)

    def _forward(self, sequences: list[Sequence[int]]) -> np.ndarray:
        import torch

        ids, mask = pad_batch(sequences, self.pad_id, self.recipe.padding_side)
        input_ids = torch.from_numpy(ids).to(self.device)
        attention_mask = torch.from_numpy(mask).to(self.device)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._pass_positions:
            inputs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
            vectors = pool(hidden, attention_mask, self.recipe.pooling)[:, : self.dim]
            if self.recipe.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)
