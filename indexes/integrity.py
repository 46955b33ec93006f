"""Integrity of an index folder: what each stage wrote (size and SHA-256 of every file), checked later.

A stage records its files in ``StageRecord.files`` (path relative to the index -> ``{"size", "sha256"}``)
when it finishes (:func:`file_entries`). Two checks read that back:

- :func:`check_sizes` stats every recorded file: cheap (no reading), so every command that opens an index
  runs it, and a truncated, emptied or deleted file is caught before it gives a traceback or a silently
  wrong ranking;
- :func:`verify` also hashes every file (reads the whole index): ``lyre index --verify`` runs it and
  rebuilds only the stages that fail, which also catches same-size damage (a flipped bit, a zeroed chunk,
  a swapped vocabulary file).

Both return the damage found; :func:`require_intact` turns the first of it into the one-line error that
names the file and the repair command. :func:`parse_manifest_bytes` checks the manifest itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.indexes.stages import StageRecord

HASH_BLOCK = 1 << 20


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks so memory stays flat whatever the file's size."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_entries(index_dir: str | Path, paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` for ``paths`` (absolute, or relative to ``index_dir``); a
    folder stands for every file under it, except lyre's hidden temporaries. For ``StageRecord.files``."""
    index_dir = Path(index_dir)
    files: list[Path] = []
    for path in map(Path, paths):
        path = path if path.is_absolute() else index_dir / path
        if path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            files.append(path)
    entries: dict[str, dict[str, Any]] = {}
    for file in sorted(files):
        entries[file.relative_to(index_dir).as_posix()] = {
            "size": file.stat().st_size,
            "sha256": sha256_of(file),
        }
    return entries


@dataclass(frozen=True)
class Damage:
    """One recorded file that is not as the stage left it."""

    path: str
    """Relative to the index folder, as recorded."""
    problem: str


def _recorded_files(record: StageRecord | Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    return record.files if isinstance(record, StageRecord) else record.get("files", {})


def check_sizes(index_dir: str | Path, record: StageRecord | Mapping[str, Any]) -> list[Damage]:
    """Recorded files that are missing, not files, or of another size (a stat each; no reading)."""
    index_dir = Path(index_dir)
    damage = []
    for relative, entry in _recorded_files(record).items():
        path = index_dir / relative
        if not path.exists():
            damage.append(Damage(relative, "missing"))
        elif not path.is_file():
            damage.append(Damage(relative, "not a file"))
        elif (size := path.stat().st_size) != entry["size"]:
            what = "empty" if size == 0 else f"{size:,} bytes"
            damage.append(
                Damage(relative, f"{what}, but {entry['size']:,} bytes were written (truncated or replaced)")
            )
    return damage


def verify(index_dir: str | Path, record: StageRecord | Mapping[str, Any]) -> list[Damage]:
    """:func:`check_sizes`, then the SHA-256 of every file of the right size (reads the whole stage)."""
    index_dir = Path(index_dir)
    damage = check_sizes(index_dir, record)
    bad = {d.path for d in damage}
    for relative, entry in _recorded_files(record).items():
        if relative not in bad and sha256_of(index_dir / relative) != entry["sha256"]:
            damage.append(Damage(relative, "content changed since it was written (SHA-256 differs)"))
    return damage


def repair_command(index_dir: str | Path, corpus: str | None = None) -> str:
    """The command that rebuilds what fails: the recorded corpus when known, else a placeholder."""
    return f"lyre index {corpus or 'CORPUS'} --out {index_dir} --verify"


def damage_error(
    index_dir: str | Path, stage: str, damage: list[Damage], corpus: str | None = None
) -> LyreError:
    """One line for the first damaged file of ``stage``: which file, what is wrong, how to repair."""
    first = damage[0]
    more = f" (and {len(damage) - 1} more file(s))" if len(damage) > 1 else ""
    return LyreError(
        f"{Path(index_dir) / first.path}: {first.problem}{more}; the {stage} stage is damaged; "
        f"rebuild it with `{repair_command(index_dir, corpus)}`"
    )


def require_intact(
    index_dir: str | Path, stage: str, record: StageRecord | Mapping[str, Any], corpus: str | None = None
) -> None:
    """Raise :func:`damage_error` when a file of ``stage`` is missing or of the wrong size."""
    damage = check_sizes(index_dir, record)
    if damage:
        raise damage_error(index_dir, stage, damage, corpus)


def parse_manifest_bytes(path: str | Path, data: bytes, format_version: int) -> dict[str, Any]:
    """The manifest in ``data`` (read from ``path``), checked: UTF-8 JSON, an object, this lyre's
    ``format`` and a ``stages`` object of objects. Anything else is one line naming the file."""
    path = Path(path)
    rebuild = f"rebuild the index with `lyre index CORPUS --out {path.parent} --overwrite`"
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise LyreError(f"{path}: not a lyre manifest (not UTF-8 text); {rebuild}") from None
    except json.JSONDecodeError as error:
        raise LyreError(
            f"{path}: not a lyre manifest (invalid JSON at line {error.lineno}, column {error.colno}: "
            f"{error.msg}); {rebuild}"
        ) from None
    if not isinstance(manifest, dict):
        raise LyreError(
            f"{path}: not a lyre manifest (a JSON {type(manifest).__name__}, not an object); {rebuild}"
        )
    found = manifest.get("format")
    if found != format_version:
        if isinstance(found, int) and not isinstance(found, bool) and found > format_version:
            raise LyreError(
                f"{path}: index format {found} is newer than this lyre reads (format {format_version}); "
                f"upgrade lyre, or {rebuild}"
            )
        raise LyreError(
            f"{path}: unknown index format {found!r} (this lyre reads format {format_version}); {rebuild}"
        )
    stages = manifest.setdefault("stages", {})
    if not isinstance(stages, dict) or not all(isinstance(s, dict) for s in stages.values()):
        raise LyreError(f'{path}: not a lyre manifest ("stages" is not an object of objects); {rebuild}')
    return manifest
