"""The index manifest: which stages of an index folder are complete, and how each was made.

Every stage writes its files first and records itself here last (atomically), so a folder is never
accepted by search while a stage it needs is half-built. Starting a rebuild of a stage clears its
record first, for the same reason. Each record has the shape of :class:`indexes.stages.StageRecord`
(summary, params, counts, provenance, files) plus ``complete``. Every read-modify-write of the manifest
holds the folder's short manifest lock (:func:`basics.lock.manifest_update`), so job-array slices that
finish at the same moment never lose each other's updates.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lyre.basics.atomic import write_json_atomic
from lyre.basics.errors import LyreError
from lyre.basics.lock import manifest_update

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 3
"""2: records share one shape (summary, params, counts, provenance, files); 3: ``files`` hold the size and
SHA-256 of every file a stage wrote."""
DOCSTORE = "docstore"
BM25 = "bm25"
EMBEDDINGS = "embeddings"
DENSE = "dense"
STAGES = (DOCSTORE, BM25, EMBEDDINGS, DENSE)
"""Stage names, each also the name of the folder holding the stage's files."""
PASSAGES = "passages"
"""The optional stage of a passage index (``--passage-tokens``): BM25 and the embeddings read its store."""
DERIVED = {
    DOCSTORE: (PASSAGES, BM25, EMBEDDINGS, DENSE),
    PASSAGES: (BM25, EMBEDDINGS, DENSE),
    BM25: (),
    EMBEDDINGS: (DENSE,),
    DENSE: (),
}
"""The stages built from each stage's files."""
HOW_TO_BUILD = {
    DOCSTORE: "lyre index CORPUS --out INDEX",
    PASSAGES: "lyre index CORPUS --out INDEX --passage-tokens N",
    BM25: "lyre index CORPUS --out INDEX",
    EMBEDDINGS: "lyre index CORPUS --out INDEX --embed-model MODEL",
    DENSE: "lyre index CORPUS --out INDEX --embed-model MODEL",
}
"""The one command that builds or finishes each stage, named by every 'missing stage' message."""
REENCODE = "lyre index {corpus} --out {index} --embed-model {model} --overwrite"
"""The command that encodes an index again with another (or changed) embedding model or recipe."""


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``index_dir``; an empty one when the folder has none yet. A manifest that is not
    one (garbage bytes, a JSON list, another format) or cannot be read is one line naming it."""
    from lyre.indexes.integrity import parse_manifest_bytes

    path = Path(index_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {"format": FORMAT_VERSION, "stages": {}}
    except OSError as error:
        raise LyreError(
            f"{path}: cannot read it ({error.strerror or error}); check its permissions, or rebuild the "
            f"index with `{HOW_TO_BUILD[DOCSTORE]} --overwrite`"
        ) from None
    return parse_manifest_bytes(path, data, FORMAT_VERSION)


def _write(index_dir: Path, manifest: dict[str, Any]) -> None:
    index_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(index_dir / MANIFEST_NAME, manifest)


def record_stage(index_dir: str | Path, stage: str, record: dict[str, Any]) -> None:
    """Mark ``stage`` complete with its record (a ``StageRecord.to_dict()``)."""
    if stage not in (*STAGES, PASSAGES):
        raise ValueError(f"unknown stage {stage!r}; known: {(*STAGES, PASSAGES)}")
    index_dir = Path(index_dir)
    with manifest_update(index_dir):
        manifest = read_manifest(index_dir)
        manifest["stages"][stage] = {"complete": True, **record}
        _write(index_dir, manifest)


def clear_stage(index_dir: str | Path, stage: str) -> None:
    """Forget ``stage`` before rebuilding it, so a crash mid-rebuild leaves it visibly incomplete."""
    index_dir = Path(index_dir)
    with manifest_update(index_dir):
        manifest = read_manifest(index_dir)
        if manifest["stages"].pop(stage, None) is not None:
            _write(index_dir, manifest)


def invalidate(index_dir: str | Path, stage: str) -> None:
    """Forget ``stage`` before it is rewritten, together with every stage derived from it, whose records
    and files describe the old content: a later run must rebuild them, never resume or accept them."""
    index_dir = Path(index_dir)
    with manifest_update(index_dir):
        clear_stage(index_dir, stage)
        for derived in DERIVED[stage]:
            clear_stage(index_dir, derived)
            shutil.rmtree(index_dir / derived, ignore_errors=True)


def complete_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of the complete stages of a loaded manifest."""
    return {name: record for name, record in manifest["stages"].items() if record.get("complete")}


def stage_record(index_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The record of a complete stage, or None."""
    return complete_records(read_manifest(index_dir)).get(stage)


def require_stage(index_dir: str | Path, stage: str) -> dict[str, Any]:
    """The record of ``stage``; a one-line error naming the folder and the command of :data:`HOW_TO_BUILD`
    that builds it when it is missing."""
    index_dir = Path(index_dir)
    how = HOW_TO_BUILD[stage]
    if not (index_dir / MANIFEST_NAME).exists():
        raise LyreError(f"{index_dir}: not a lyre index (no {MANIFEST_NAME}); build one with `{how}`")
    record = stage_record(index_dir, stage)
    if record is None:
        raise LyreError(
            f"{index_dir}: the {stage} stage is missing or incomplete; run `{how}` to build or finish it"
        )
    return record
