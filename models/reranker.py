"""Rerankers: score (query, document) pairs with a yes/no LLM (lychee-rerank) or a cross-encoder.

yes/no recipe (lychee-rerank, Qwen3-Reranker): a causal LM reads a hand-built prompt and the score is
p(yes) = softmax(l_yes, l_no)[0] at the last position, in float32. Only the last position's logits are
computed (``logits_to_keep=1``): the 152k-row output layer over every position is the main waste of naive
implementations. Padding is on the left so the last position is the answer slot in every row, and
position ids are counted from each row's first real token, so a pair scores the same alone or in a batch.
The document is truncated to a token budget before formatting, so the prompt's suffix and the answer
slot are never cut; a long text is cut before tokenizing only where no token the model reads can change
(:mod:`models.token_prefix`). Pairs run in the one batch loop the embedder uses too
(:func:`models.batching.run_batches`), in its invariant layout: a pair's score is the same, bit for bit,
whatever pairs it is scored with, so cached, resumed and distributed scores equal fresh ones; out of
memory halves the budget and retries.

cross-encoder recipe: a sequence classification head over ``[CLS] query [SEP] document [SEP]``; the
score is the single logit, or p(relevant) for a two-class head.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.errors import LyreError, opt
from lyre.basics.numbers import count
from lyre.basics.progress import ProgressSink, TokenProgress
from lyre.models.batching import Batch, invariant_layout, pad_batch, run_batches
from lyre.models.loading import load_model, load_tokenizer, pick_device, pick_dtype, resolve_model
from lyre.models.rerank_templates import DEFAULT_INSTRUCTION, DEFAULT_RERANKER, RerankTemplate, get_template
from lyre.models.token_prefix import token_prefixes

KINDS = ("auto", "yes-no", "cross-encoder")


@dataclass(frozen=True)
class RerankerSettings:
    """Everything that determines the scores, recorded in the run's sidecar."""

    model: str
    kind: str
    template: str
    template_text: str
    instruction: str
    max_length: int
    doc_max_tokens: int
    token_budget: int
    device: str
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_kind(folder: Path) -> str:
    """``yes-no`` for a causal LM, ``cross-encoder`` for a sequence classifier, from ``config.json``."""
    architectures = (
        json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    )
    if any(name.endswith("ForCausalLM") for name in architectures):
        return "yes-no"
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "cross-encoder"
    raise LyreError(
        f"{folder}: cannot tell the reranker kind from config.json architectures {architectures}; "
        "use a causal LM (yes/no) or a sequence classification (cross-encoder) model"
    )


def yes_no_ids(tokenizer: Any) -> tuple[int, int]:
    """The ids of ``yes`` and ``no``, each of which must be a single token of this tokenizer."""
    ids = []
    for word in ("yes", "no"):
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if len(tokens) != 1:
            raise LyreError(
                f"the reranker's tokenizer splits {word!r} into {len(tokens)} tokens {tokens}; "
                "a yes/no reranker needs single-token answers "
                "(or a sequence classification model, scored as a cross-encoder)"
            )
        ids.append(tokens[0])
    return ids[0], ids[1]


class Reranker:
    """Scores (query, document) pairs; build it with :meth:`from_pretrained`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        kind: str,
        name: str,
        template: str | RerankTemplate = "lychee",
        instruction: str | None = None,
        max_length: int = 1024,
        doc_max_tokens: int = 512,
        token_budget: int | None = None,
    ) -> None:
        if kind not in ("yes-no", "cross-encoder"):
            raise LyreError(f"unknown reranker kind {kind!r}; use {', '.join(KINDS)}")
        if max_length < 8 or doc_max_tokens < 1:
            raise LyreError(f"rerank max_length {max_length} / doc_max_tokens {doc_max_tokens} are too small")
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.template = template if isinstance(template, RerankTemplate) else get_template(template)
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        self.device = next(model.parameters()).device
        if kind == "cross-encoder":
            limit = getattr(model.config, "max_position_embeddings", max_length)
            max_length = min(max_length, limit)
            tokenizer.padding_side = "right"
        else:
            tokenizer.padding_side = "left"
            self.yes_id, self.no_id = yes_no_ids(tokenizer)
        self.max_length = max_length
        self.doc_max_tokens = doc_max_tokens
        default_budget = 32768 if self.device.type == "cuda" else 4096
        self.token_budget = max(token_budget or default_budget, max_length)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else pad
        self.settings = RerankerSettings(
            model=name,
            kind=kind,
            template=self.template.name if kind == "yes-no" else "",
            template_text=self.template.text if kind == "yes-no" else "",
            instruction=self.instruction if kind == "yes-no" else "",
            max_length=self.max_length,
            doc_max_tokens=doc_max_tokens,
            token_budget=self.token_budget,
            device=str(self.device),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_RERANKER,
        *,
        kind: str = "auto",
        template: str | RerankTemplate = "lychee",
        instruction: str | None = None,
        max_length: int = 1024,
        doc_max_tokens: int = 512,
        token_budget: int | None = None,
        device: str | None = None,
    ) -> Reranker:
        """Load a reranker from a hub id or a local folder (one-line error when the weights are missing)."""
        if kind not in KINDS:
            raise LyreError(f"unknown reranker kind {kind!r}; use {', '.join(KINDS)}")
        folder = resolve_model(name_or_path, option=opt("rerank_model"))
        if kind == "auto":
            kind = detect_kind(folder)
        torch_device = pick_device(device)
        auto_class = "AutoModelForCausalLM" if kind == "yes-no" else "AutoModelForSequenceClassification"
        tokenizer = load_tokenizer(folder, padding_side="left" if kind == "yes-no" else "right")
        model = load_model(
            folder,
            device=torch_device,
            dtype=pick_dtype(torch_device),
            auto_class=auto_class,
            option=opt("rerank_model"),
        )
        return cls(
            model,
            tokenizer,
            kind=kind,
            name=str(name_or_path),
            template=template,
            instruction=instruction,
            max_length=max_length,
            doc_max_tokens=doc_max_tokens,
            token_budget=token_budget,
        )

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Scores of ``documents`` for one query, float32, in input order."""
        return self.score_pairs([(query, document) for document in documents])

    def score_pairs(
        self, pairs: Sequence[tuple[str, str]], progress: ProgressSink | None = None
    ) -> np.ndarray:
        """Scores of (query, document) pairs, float32, in input order (batched by length internally).

        ``progress``: where to report, for callers that score in groups; by default a bar of its own.
        """
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if progress is not None:
            return self._run(pairs, progress)
        with TokenProgress(len(pairs), "rerank", unit="pair") as own:
            return self._run(pairs, own)

    # --- encoding -------------------------------------------------------------------------------------

    def truncate_documents(self, documents: Sequence[str], budgets: Sequence[int]) -> list[str]:
        """Each document cut to its longest prefix of at most ``budget`` tokens, at a token's end.

        Cutting the text (by the tokenizer's character offsets) rather than the ids keeps the prompt a plain
        string that is tokenized once as a whole, exactly as a reference implementation would. A long
        document is cut first where its first ``budget + 1`` tokens stay those of the whole text
        (:func:`~models.token_prefix.token_prefixes`).
        """
        documents = token_prefixes(self.tokenizer, documents, [max(budget, 0) for budget in budgets])
        offsets = self.tokenizer(
            documents, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        cut = []
        for document, spans, budget in zip(documents, offsets["offset_mapping"], budgets, strict=True):
            if len(spans) <= budget:
                cut.append(document)
            else:
                cut.append(document[: spans[budget - 1][1]] if budget > 0 else "")
        return cut

    def prompt(self, query: str, document: str) -> str:
        """The exact text the yes/no model reads for one pair (document already truncated)."""
        return self.template.format(instruction=self.instruction, query=query, doc=document)

    def encode_yes_no(self, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
        """Token ids of each pair's prompt, the document cut so the whole fits in ``max_length``."""
        queries = sorted({query for query, _ in pairs})
        counts = self._token_counts([self.prompt(query, "") for query in queries], self.max_length)
        overhead = {query: tokens for query, (tokens, _) in zip(queries, counts, strict=True)}
        for tokens, more in counts:
            if tokens >= self.max_length:
                raise LyreError(
                    f"a query's rerank prompt alone takes {count(tokens)}{more} tokens, max_length is "
                    f"{count(self.max_length)}; shorten the query or raise the reranker's max_length"
                )
        budgets = [min(self.doc_max_tokens, self.max_length - overhead[query]) for query, _ in pairs]
        documents = self.truncate_documents([document for _, document in pairs], budgets)
        encoded = self._ids(
            [self.prompt(query, doc) for (query, _), doc in zip(pairs, documents, strict=True)]
        )
        for i, ids in enumerate(encoded):
            # Tokens can merge across the document's edges; cut further until the whole prompt fits.
            while len(ids) > self.max_length:
                budgets[i] -= len(ids) - self.max_length
                query, document = pairs[i]
                ids = self._ids([self.prompt(query, self.truncate_documents([document], [budgets[i]])[0])])[0]
            encoded[i] = ids
        return encoded

    def encode_cross(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, list[int]]]:
        """``[CLS] query [SEP] document [SEP]`` per pair, only the document truncated."""
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=True)
        for tokens, more in self._token_counts(sorted({query for query, _ in pairs}), room):
            if tokens >= room:
                raise LyreError(
                    f"a rerank query takes {count(tokens)}{more} tokens, which leaves no room for the "
                    f"document in max_length {count(self.max_length)}; shorten the query or raise the "
                    "reranker's max_length"
                )
        documents = self.truncate_documents(
            [document for _, document in pairs], [self.doc_max_tokens] * len(pairs)
        )
        tokens = self.tokenizer(
            [query for query, _ in pairs],
            documents,
            truncation="only_second",
            max_length=self.max_length,
        )
        keys = [key for key in ("input_ids", "token_type_ids") if key in tokens]
        return [{key: tokens[key][i] for key in keys} for i in range(len(pairs))]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _token_counts(self, texts: list[str], limit: int) -> list[tuple[int, str]]:
        """Each text's token count, exact up to ``limit``; beyond, counted on a prefix with more than
        ``limit`` tokens (:func:`~models.token_prefix.token_prefixes`) and marked ``"+"``, a lower bound."""
        prefixes = token_prefixes(self.tokenizer, texts, limit)
        return [
            (len(ids), "+" if prefix != text else "")
            for text, prefix, ids in zip(texts, prefixes, self._ids(prefixes), strict=True)
        ]

    # --- batched forward ------------------------------------------------------------------------------

    def _run(self, pairs: Sequence[tuple[str, str]], progress: ProgressSink) -> np.ndarray:
        """Tokenize, then score in token-budget batches, longest first."""
        encoded = self.encode_yes_no(pairs) if self.kind == "yes-no" else self.encode_cross(pairs)
        lengths = [len(item["input_ids"] if isinstance(item, dict) else item) for item in encoded]
        progress.tokenized(len(encoded), sum(lengths))
        scores = np.zeros(len(encoded), dtype=np.float32)

        def forward(batch: Batch) -> None:
            computed = self._forward([encoded[i] for i in batch.rows], batch.width)
            scores[batch.inputs] = computed[: len(batch.inputs)]
            progress.advance(len(batch.inputs), sum(lengths[i] for i in batch.inputs))

        self.token_budget = run_batches(
            lengths,
            self.token_budget,
            forward,
            too_long=self._too_long,
            layout=invariant_layout(self.device.type),
            max_width=self.max_length,
        )
        return scores

    @staticmethod
    def _too_long(length: int) -> LyreError:
        return LyreError(
            f"one rerank pair of {count(length, 'tokens')} does not fit in memory; lower the reranker's "
            "max_length"
        )

    def _forward(self, items: list[Any], width: int | None = None) -> np.ndarray:
        """Scores of ``items`` (token ids, or ids and type ids), padded to ``width`` (None: the longest)."""
        import torch

        with torch.inference_mode():
            if self.kind == "yes-no":
                return self._forward_yes_no(items, width)
            return self._forward_cross(items, width)

    def _tensors(self, rows: list[list[int]], pad_id: int, side: str, width: int | None) -> tuple[Any, Any]:
        import torch

        ids, mask = pad_batch(rows, pad_id, side, width)
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def _forward_yes_no(self, items: list[list[int]], width: int | None) -> np.ndarray:
        import torch

        input_ids, mask = self._tensors(items, self.pad_id, "left", width)
        # Positions count from each row's first real token, as they do when the row is alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=1,
            use_cache=False,
        )
        pair_logits = out.logits[:, -1, [self.yes_id, self.no_id]].float()
        return torch.softmax(pair_logits, dim=-1)[:, 0].cpu().numpy()

    def _forward_cross(self, items: list[dict[str, list[int]]], width: int | None) -> np.ndarray:
        import torch

        input_ids, mask = self._tensors([item["input_ids"] for item in items], self.pad_id, "right", width)
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in items[0]:
            types, _ = self._tensors([item["token_type_ids"] for item in items], 0, "right", width)
            inputs["token_type_ids"] = types
        logits = self.model(**inputs).logits.float()
        if logits.shape[-1] == 1:
            return logits[:, 0].cpu().numpy()
        if logits.shape[-1] == 2:
            return torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
        raise LyreError(
            f"the cross-encoder has {logits.shape[-1]} output labels; "
            "a reranker needs 1 (a score) or 2 (not relevant / relevant)"
        )
