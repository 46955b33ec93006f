"""The index manifest: which stages of an index folder are complete, and how each was made.

Every stage writes its files first and records itself here last (atomically), so a folder is never
accepted by search while a stage it needs is half-built. Starting a rebuild of a stage clears its
record first, for the same reason. Each record is a :class:`indexes.metadata.StageRecord` (summary,
params, counts, provenance, files), kept with ``complete: true``. Every read-modify-write of the manifest
holds the folder's short manifest lock (:func:`basics.lock.manifest_update`), so job-array slices that
finish at the same moment never lose each other's updates.

The manifest is read through the one metadata reader (:mod:`indexes.metadata`) into a typed
:class:`Manifest`: besides the record shape every stage shares, the params and counts that lyre reads of
each stage must have their types (:data:`STAGE_SHAPES`), so a manifest that is valid JSON with a wrong type
(``files: null``, ``size: "big"``, ``params: []``) is one line naming it, never a traceback later.
:class:`StageFolder` is how the readers of a stage's files find what the manifest recorded of them.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lyre.basics.atomic import write_json_atomic
from lyre.basics.errors import LyreError
from lyre.basics.lock import manifest_update
from lyre.indexes.integrity import repair_command, repair_hint
from lyre.indexes.metadata import (
    FileEntry,
    MetadataError,
    ShapeError,
    StageRecord,
    conform,
    decode_json,
    read_metadata,
)
from lyre.models.recipes import EmbedRecipe

T = TypeVar("T")

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
"""The one command that builds or finishes each stage, named by every 'missing stage' message (through
:func:`how_to_build`, with the index's current path)."""
REENCODE = "lyre index {corpus} --out {index} --embed-model {model} --overwrite"
"""The command that encodes an index again with another (or changed) embedding model or recipe."""


def how_to_build(stage: str, index_dir: str | Path) -> str:
    """The command of :data:`HOW_TO_BUILD` for ``stage`` of the index at ``index_dir``: the path it is at
    now, never one recorded inside it (a copied index names its own path)."""
    return HOW_TO_BUILD[stage].replace("--out INDEX", f"--out {index_dir}")


# What lyre reads of each stage's params and counts ---------------------------------------------------------


@dataclass(frozen=True)
class _DocstoreParams:
    corpus: str | None = None
    corpus_file: str | None = None
    corpus_size: int | None = None
    corpus_mtime_ns: int | None = None
    corpus_sha256: str | None = None
    format: str | None = None
    mapping: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class _DocumentCounts:
    documents: int


@dataclass(frozen=True)
class _PassageParams:
    settings: dict[str, Any]


@dataclass(frozen=True)
class _PassageCounts:
    documents: int
    passages: int
    passages_per_document_mean: float


@dataclass(frozen=True)
class _Bm25Params:
    k1: float
    b: float
    method: str
    delta: float
    analyzer: dict[str, Any]
    store: str = DOCSTORE


@dataclass(frozen=True)
class _Bm25Counts:
    documents: int
    vocabulary: int
    postings: int


@dataclass(frozen=True)
class _EmbeddingParams:
    model: str
    recipe: EmbedRecipe
    dim: int
    model_fingerprint: str | None = None
    store: str = DOCSTORE


@dataclass(frozen=True)
class _DenseParams:
    index_type: str


STAGE_SHAPES: dict[str, tuple[type, type]] = {
    DOCSTORE: (_DocstoreParams, _DocumentCounts),
    PASSAGES: (_PassageParams, _PassageCounts),
    BM25: (_Bm25Params, _Bm25Counts),
    EMBEDDINGS: (_EmbeddingParams, _DocumentCounts),
    DENSE: (_DenseParams, dict),
}
"""Each stage's params and counts, as far as lyre reads them (the rest is kept as it was written)."""


def check_stage_name(stage: str, where: str) -> None:
    if stage not in STAGE_SHAPES:
        raise ShapeError(where, f"is not a stage of a lyre index ({', '.join(STAGE_SHAPES)})")


def check_shape(stage: str, record: StageRecord, where: str) -> None:
    """Refuse (:class:`ShapeError`) a record of ``stage`` whose params or counts lyre could not read."""
    check_stage_name(stage, where)
    params, counts = STAGE_SHAPES[stage]
    conform(record.params, params, f"{where}.params")
    conform(record.counts, counts, f"{where}.counts")


# The manifest --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A manifest as read: its format and the record of every complete stage."""

    format: int = FORMAT_VERSION
    stages: dict[str, StageRecord] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``manifest.json``."""
        stages = {name: {"complete": True, **record.to_dict()} for name, record in self.stages.items()}
        return {"format": self.format, "stages": stages}


def manifest_repair(index_dir: Path) -> str:
    """What a damaged manifest's message says: every record is lost, so every stage is rebuilt."""
    return f"rebuild the index with `{repair_command(index_dir)}`"


def parse_manifest(path: Path, data: bytes) -> Manifest:
    """The manifest in ``data`` (read from ``path``): UTF-8 JSON, an object of this lyre's ``format``
    whose ``stages`` are complete records of the shapes in :data:`STAGE_SHAPES`; anything else is one line
    naming the file and the command that rebuilds the index."""
    repair = manifest_repair(path.parent)
    value = decode_json(path, data, repair)
    if type(value) is not dict:
        articles: dict[type, str] = {list: "a list", str: "a string"}
        kind = articles.get(type(value), "a " + type(value).__name__)
        raise MetadataError(path, f"not a lyre manifest ({kind}, not an object)", repair)
    found = value.get("format")
    if found != FORMAT_VERSION:
        if type(found) is int and found > FORMAT_VERSION:
            raise LyreError(  # not damage: --verify leaves another lyre's index alone
                f"{path}: index format {found} is newer than this lyre reads (format {FORMAT_VERSION}); "
                f"upgrade lyre, or rebuild the index with `lyre index CORPUS --out {path.parent} --overwrite`"
            )
        raise MetadataError(
            path, f"unknown index format {found!r} (this lyre reads format {FORMAT_VERSION})", repair
        )
    complete = {}
    try:
        for name, entry in conform(value.get("stages", {}), dict[str, dict[str, Any]], "stages").items():
            where = f"stages.{name}"
            check_stage_name(name, where)
            if conform(entry.get("complete", False), bool, f"{where}.complete"):
                record = conform(entry, StageRecord, where)
                check_shape(name, record, where)
                complete[name] = record
    except ShapeError as error:
        raise MetadataError(path, str(error), repair) from None
    return Manifest(FORMAT_VERSION, complete)


def load_manifest(index_dir: str | Path) -> Manifest:
    """The manifest of ``index_dir``, typed; an empty one when the folder has none yet. A manifest that is
    not one (garbage bytes, a JSON list, another format, a value of the wrong type) or cannot be read is
    one line naming it."""
    path = Path(index_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Manifest()
    except OSError as error:
        raise LyreError(
            f"{path}: cannot read it ({error.strerror or error}); check its permissions, or "
            f"{manifest_repair(path.parent)}"
        ) from None
    return parse_manifest(path, data)


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """:func:`load_manifest` in the JSON form (the form run sidecars and cache keys use)."""
    return load_manifest(index_dir).to_dict()


def _write(index_dir: Path, manifest: Manifest) -> None:
    index_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(index_dir / MANIFEST_NAME, manifest.to_dict())


def record_stage(index_dir: str | Path, stage: str, record: StageRecord | Mapping[str, Any]) -> None:
    """Mark ``stage`` complete with its record (a :class:`StageRecord` or its dict form), refused when it
    has not the shape a later read accepts: lyre never writes a manifest it would refuse."""
    if stage not in (*STAGES, PASSAGES):
        raise ValueError(f"unknown stage {stage!r}; known: {(*STAGES, PASSAGES)}")
    typed = record if isinstance(record, StageRecord) else StageRecord.from_dict(record)
    check_shape(stage, typed, stage)
    index_dir = Path(index_dir)
    with manifest_update(index_dir):
        manifest = load_manifest(index_dir)
        _write(index_dir, Manifest(manifest.format, {**manifest.stages, stage: typed}))


def clear_stage(index_dir: str | Path, stage: str) -> None:
    """Forget ``stage`` before rebuilding it, so a crash mid-rebuild leaves it visibly incomplete."""
    index_dir = Path(index_dir)
    with manifest_update(index_dir):
        manifest = load_manifest(index_dir)
        if stage in manifest.stages:
            kept = {name: record for name, record in manifest.stages.items() if name != stage}
            _write(index_dir, Manifest(manifest.format, kept))


def invalidate(index_dir: str | Path, stage: str) -> None:
    """Forget ``stage`` before it is rewritten, together with every stage derived from it, whose records
    and files describe the old content: a later run must rebuild them, never resume or accept them."""
    index_dir = Path(index_dir)
    with manifest_update(index_dir):
        clear_stage(index_dir, stage)
        for derived in DERIVED[stage]:
            clear_stage(index_dir, derived)
            shutil.rmtree(index_dir / derived, ignore_errors=True)


def complete_records(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of the complete stages of a manifest in its JSON form."""
    return {name: record for name, record in manifest["stages"].items() if record.get("complete")}


def stage_record(index_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The record of a complete stage in its JSON form, or None."""
    record = load_manifest(index_dir).stages.get(stage)
    return None if record is None else {"complete": True, **record.to_dict()}


def require_record(index_dir: str | Path, stage: str) -> StageRecord:
    """The record of ``stage``; a one-line error naming the folder and the command of :data:`HOW_TO_BUILD`
    that builds it when it is missing."""
    index_dir = Path(index_dir)
    how = how_to_build(stage, index_dir)
    if not (index_dir / MANIFEST_NAME).exists():
        raise LyreError(f"{index_dir}: not a lyre index (no {MANIFEST_NAME}); build one with `{how}`")
    record = load_manifest(index_dir).stages.get(stage)
    if record is None:
        raise LyreError(
            f"{index_dir}: the {stage} stage is missing or incomplete; run `{how}` to build or finish it"
        )
    return record


def require_stage(index_dir: str | Path, stage: str) -> dict[str, Any]:
    """:func:`require_record` in the JSON form."""
    return {"complete": True, **require_record(index_dir, stage).to_dict()}


# A stage's files, as their readers find them ----------------------------------------------------------------


@dataclass(frozen=True)
class StageFolder:
    """A stage's folder as the readers of its metadata files see it: what the manifest recorded of each
    file (checked by :func:`indexes.metadata.read_metadata`) and the line that says how to repair it."""

    folder: Path
    stage: str
    files: Mapping[str, FileEntry]
    """The recorded files of the stage; empty when it is not recorded (still being built, or a folder
    outside an index), whose files are then parsed and checked for shape without a hash."""
    repair: str

    @classmethod
    def locate(cls, folder: str | Path, manifest: Manifest | None = None) -> StageFolder:
        """The stage folder ``INDEX/STAGE``; ``manifest``: the index's, when the caller has read it."""
        folder = Path(folder)
        index_dir, stage = folder.parent, folder.name
        if manifest is None and (index_dir / MANIFEST_NAME).exists():
            manifest = load_manifest(index_dir)
        stages = manifest.stages if manifest is not None else {}
        record = stages.get(stage)
        if record is None:  # a stage being built: its files are its builder's, not yet the index's
            repair = f"the {stage} stage was not finished; remove {folder} and run the command again"
            return cls(folder, stage, {}, repair)
        command = repair_command(index_dir, repair_hint(stages))
        return cls(folder, stage, record.files, f"the {stage} stage is damaged; rebuild it with `{command}`")

    def read(self, name: str, kind: type[T]) -> T:
        """The metadata file ``name`` of this folder as a ``kind``, checked against its record."""
        entry = self.files.get(f"{self.stage}/{name}")
        return read_metadata(self.folder / name, kind, repair=self.repair, entry=entry)

    def error(self, name: str, problem: str) -> MetadataError:
        """A problem found in a file after it was read (e.g. two files that disagree), as one line."""
        return MetadataError(self.folder / name, problem, self.repair)
