"""``lyre doctor``: load an embedding model and prove its recipe behaves, before hours of encoding.

The failures it looks for are silent ones seen in the wild: pooling a pad position (batched vectors then
differ from one-by-one vectors), a missing or doubled EOS for last-token models, and an instruction that
reaches documents or never reaches queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.numbers import count
from lyre.basics.provenance import library_versions
from lyre.models.embedder import Embedder

SAMPLE_TEXTS = (
    "What is the boiling point of water at sea level?",
    "Proteins fold into three-dimensional structures determined by their amino acid sequence.",
    "short",
    "Dense retrieval encodes queries and documents into vectors and ranks documents by inner product; "
    "sorting inputs by length and batching them by a token budget keeps padding to a minimum.",
)
MIN_COSINE = 0.999


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class DoctorReport:
    """What `lyre doctor` prints: the environment, and for a model its effective recipe and each check."""

    environment: dict[str, str]
    model: str | None = None
    device: str | None = None
    dim: int | None = None
    recipe: dict[str, Any] | None = None
    recipe_hash: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def render(self) -> str:
        lines = [f"{name:<22} {value}" for name, value in self.environment.items()]
        if self.model is not None:
            lines += [
                "",
                f"model {self.model} on {self.device}, {self.dim} dimensions, recipe {self.recipe_hash}",
            ]
            lines += [f"  {key}: {value!r}" for key, value in (self.recipe or {}).items()]
        lines += [f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}" for check in self.checks]
        return "\n".join(lines)


def environment() -> dict[str, str]:
    """Versions and devices: where encoding, Faiss search and reranking will run, and why."""
    found = library_versions(
        "torch", "transformers", "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "bm25s", "ray"
    )
    info = {name: version for name, version in found.items() if version != "not installed"}
    import torch

    info["torch device"] = (
        f"cuda ({torch.cuda.device_count()} GPU: {torch.cuda.get_device_name(0)})"
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads; no CUDA device visible)"
    )
    try:
        import faiss
    except ImportError:
        info["faiss search"] = "faiss is not installed: dense indexes cannot be built or searched"
        return info
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    info["faiss search"] = (
        f"GPU ({gpus} visible)" if gpus else "CPU (this faiss build has no GPU support or no GPU)"
    )
    return info


def _agreement(embedder: Any, texts: list[str], encode: str) -> float:
    batched = getattr(embedder, encode)(texts)
    single = np.concatenate([getattr(embedder, encode)([text]) for text in texts])
    cosines = (batched * single).sum(1) / (np.linalg.norm(batched, axis=1) * np.linalg.norm(single, axis=1))
    return float(cosines.min())


def _eos_check(embedder: Any, texts: list[str]) -> Check:
    """Last-token pooling reads the state at the final position, which must be one EOS token: without it
    the vector is the state of whatever word happens to end the text, a silent loss of quality that the
    batched = one-by-one check cannot see (both paths pool the same wrong token)."""
    eos = embedder.eos_id
    if eos is None:
        if embedder.recipe.pooling == "last-token":
            return Check(
                "EOS",
                False,
                "last-token pooling without an EOS: vectors are read at each text's final word; "
                "use a recipe that appends EOS (ensure_eos) or another pooling",
            )
        return Check("EOS", True, f"{embedder.recipe.pooling} pooling does not read an EOS; nothing to check")
    long_text = " ".join(["retrieval"] * (embedder.recipe.max_length + 8))
    formatted = [embedder.recipe.format_query(text) for text in texts] + [
        embedder.recipe.format_document(text) for text in [*texts, long_text]
    ]
    sequences = embedder.tokenize(formatted)
    bad = [
        index
        for index, ids in enumerate(sequences)
        if ids[-1] != eos or (len(ids) > 1 and ids[-2] == eos) or len(ids) > embedder.recipe.max_length
    ]
    detail = (
        f"all {count(len(sequences), 'inputs')} (one truncated to {count(len(sequences[-1]), 'tokens')}) "
        f"end with exactly one EOS ({eos})"
        if not bad
        else f"{count(len(bad), 'inputs')} do not end with exactly one EOS ({eos}), "
        f"first: {formatted[bad[0]][:60]!r}"
    )
    return Check("EOS", not bad, detail)


def _instruction_check(embedder: Any, text: str) -> Check:
    recipe = embedder.recipe
    task = recipe.query_task
    if not task:
        same = recipe.format_query(text) == text and recipe.format_document(text) == text
        return Check("instruction", same, "no instruction: queries and documents are encoded as given")
    query, document = recipe.format_query(text), recipe.format_document(text)
    reaches_query = task in query and not np.allclose(
        embedder.encode_queries([text]), embedder.encode_documents([text]), atol=1e-6
    )
    ok = reaches_query and task not in document
    return Check(
        "instruction",
        ok,
        f"queries are encoded as {query!r}; documents as {document!r}"
        if ok
        else "the instruction does not reach queries only; check the recipe's query template",
    )


def doctor(
    embed_model: str | Path | None = None,
    *,
    recipe: str | None = None,
    device: str | None = None,
    texts: list[str] | None = None,
    **overrides: Any,
) -> DoctorReport:
    """The environment; with ``embed_model``, load it with its effective recipe and run the checks."""
    if embed_model is None:
        return DoctorReport(environment=environment())
    embedder = Embedder.from_pretrained(embed_model, recipe=recipe, device=device, **overrides)
    texts = list(texts or SAMPLE_TEXTS)
    report = DoctorReport(
        environment=environment(),
        model=embedder.name,
        device=str(embedder.device),
        dim=embedder.dim,
        recipe=embedder.recipe.to_dict(),
        recipe_hash=embedder.recipe.hash(),
    )
    for encode in ("encode_queries", "encode_documents"):
        cosine = _agreement(embedder, texts, encode)
        report.checks.append(
            Check(
                f"batched = one-by-one ({encode.split('_')[1]})",
                cosine >= MIN_COSINE,
                f"min cosine {cosine:.6f} over {count(len(texts), 'texts')} (need >= {MIN_COSINE})",
            )
        )
    report.checks.append(_eos_check(embedder, texts))
    report.checks.append(_instruction_check(embedder, texts[0]))
    return report
