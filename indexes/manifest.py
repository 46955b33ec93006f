"""The index manifest: which stages of an index folder are complete, and how each was made.

Every stage writes its files first and records itself here last (atomically), so a folder is never
accepted by search while a stage it needs is half-built. Starting a rebuild of a stage clears its
record first, for the same reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from basics.atomic import write_json_atomic
from basics.errors import LyreError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
STAGES = ("docstore", "bm25", "embeddings", "dense")
DERIVED = {"docstore": ("bm25", "embeddings", "dense"), "bm25": (), "embeddings": ("dense",), "dense": ()}
"""The stages built from each stage's files (each lives in the folder named after it)."""


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``index_dir``; an empty one when the folder has none yet."""
    path = Path(index_dir) / MANIFEST_NAME
    if not path.exists():
        return {"format": FORMAT_VERSION, "stages": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LyreError(
            f"{path}: not valid JSON ({error.msg}); rebuild the index with `lyre index`"
        ) from None
    manifest.setdefault("stages", {})
    return manifest


def _write(index_dir: Path, manifest: dict[str, Any]) -> None:
    index_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(index_dir / MANIFEST_NAME, manifest)


def record_stage(index_dir: str | Path, stage: str, record: dict[str, Any]) -> None:
    """Mark ``stage`` complete with its record (parameters, provenance, counts)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    manifest["stages"][stage] = {"complete": True, **record}
    _write(index_dir, manifest)


def clear_stage(index_dir: str | Path, stage: str) -> None:
    """Forget ``stage`` before rebuilding it, so a crash mid-rebuild leaves it visibly incomplete."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    if manifest["stages"].pop(stage, None) is not None:
        _write(index_dir, manifest)


def invalidate(index_dir: str | Path, stage: str) -> None:
    """Forget ``stage`` before it is rewritten, together with every stage derived from it, whose records
    and files describe the old content: a later run must rebuild them, never resume or accept them."""
    index_dir = Path(index_dir)
    clear_stage(index_dir, stage)
    for derived in DERIVED[stage]:
        clear_stage(index_dir, derived)
        shutil.rmtree(index_dir / derived, ignore_errors=True)


def stage_record(index_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The record of a complete stage, or None."""
    record = read_manifest(index_dir)["stages"].get(stage)
    return record if record and record.get("complete") else None


def require_stage(index_dir: str | Path, stage: str, how: str = "lyre index") -> dict[str, Any]:
    """The record of ``stage``; a one-line error naming the folder and the fix when it is missing."""
    index_dir = Path(index_dir)
    if not (index_dir / MANIFEST_NAME).exists():
        raise LyreError(f"{index_dir}: not a lyre index (no {MANIFEST_NAME}); build one with `{how}`")
    record = stage_record(index_dir, stage)
    if record is None:
        raise LyreError(
            f"{index_dir}: the {stage} stage is missing or incomplete; run `{how}` again to finish it"
        )
    return record
