"""Integrity of an index folder: what each stage wrote (size and SHA-256 of every file), checked later.

A stage records its files in ``StageRecord.files`` (path relative to the index -> size and SHA-256) when
it finishes (:func:`file_entries`). Two checks read that back:

- :func:`quick_check` runs whenever a command opens an index: it stats every recorded file, so a
  truncated, emptied or deleted file is caught before it gives a traceback or a silently wrong ranking,
  and hashes the small metadata files lyre parses (:func:`is_checked_on_open`), so even a flipped byte
  that still parses is caught. That costs microseconds: the data files (Parquet parts, arrays, Faiss
  shards), which make up the size of an index, are only stat'ed;
- :func:`verify` hashes every file (reads the whole index): ``lyre index --verify`` runs it and rebuilds
  only the stages that fail, which also catches same-size damage in the data files (a flipped bit, a
  zeroed chunk).

Both return the damage found; :func:`damage_error` turns the first of it into the one-line error that
names the file and the repair command (:func:`repair_command`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.basics.provenance import sha256_file
from lyre.indexes.metadata import CHANGED, FileEntry, StageRecord, size_problem

QUICK_HASH_LIMIT = 1 << 20
"""Metadata files up to this size are hashed on every open (a SHA-256 of 1 MiB takes about a millisecond).
A larger one (the vocabulary of a big corpus) is hashed by the metadata reader when it is read."""


def file_entries(index_dir: str | Path, paths: Iterable[str | Path]) -> dict[str, FileEntry]:
    """Size and SHA-256 of ``paths`` (absolute, or relative to ``index_dir``) by path relative to the
    index; a folder stands for every file under it, except lyre's hidden temporaries. For
    ``StageRecord.files``."""
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
    return {
        file.relative_to(index_dir).as_posix(): FileEntry(file.stat().st_size, sha256_file(file))
        for file in sorted(files)
    }


@dataclass(frozen=True)
class Damage:
    """One recorded file that is not as the stage left it."""

    path: str
    """Relative to the index folder, as recorded."""
    problem: str


def is_checked_on_open(relative: str, entry: FileEntry) -> bool:
    """Whether :func:`quick_check` hashes this file: a JSON file lyre parses, of at most
    :data:`QUICK_HASH_LIMIT` bytes. An embedding chunk's completion record (``*.done.json``) is never
    parsed, only its existence counts; an index has one per chunk, so it is left to ``--verify``."""
    parsed = relative.endswith(".json") and not relative.endswith(".done.json")
    return parsed and entry.size <= QUICK_HASH_LIMIT


def quick_check(index_dir: str | Path, record: StageRecord) -> list[Damage]:
    """Recorded files that are missing, not files, or of another size (a stat each), and metadata files
    whose SHA-256 changed (:func:`is_checked_on_open`)."""
    index_dir = Path(index_dir)
    damage = []
    for relative, entry in record.files.items():
        path = index_dir / relative
        if not path.exists():
            damage.append(Damage(relative, "missing"))
        elif not path.is_file():
            damage.append(Damage(relative, "not a file"))
        elif (size := path.stat().st_size) != entry.size:
            damage.append(Damage(relative, size_problem(size, entry.size)))
        elif is_checked_on_open(relative, entry) and sha256_file(path) != entry.sha256:
            damage.append(Damage(relative, CHANGED))
    return damage


def verify(index_dir: str | Path, record: StageRecord) -> list[Damage]:
    """:func:`quick_check`, then the SHA-256 of every other file of the right size (reads the whole stage)."""
    index_dir = Path(index_dir)
    damage = quick_check(index_dir, record)
    seen = {d.path for d in damage}
    for relative, entry in record.files.items():
        unchecked = relative not in seen and not is_checked_on_open(relative, entry)
        if unchecked and sha256_file(index_dir / relative) != entry.sha256:
            damage.append(Damage(relative, CHANGED))
    return damage


def repair_command(index_dir: str | Path, corpus: str | None = None) -> str:
    """The command that rebuilds what fails: the recorded corpus when known, else a placeholder."""
    return f"lyre index {corpus or 'CORPUS'} --out {index_dir} --verify"


def repair_hint(records: Mapping[str, StageRecord]) -> str:
    """What to put after ``lyre index`` to rebuild damaged files: the recorded corpus, and the recorded
    embedding model when the index has one (a repair with another model would be refused)."""
    docstore, embeddings = records.get("docstore"), records.get("embeddings")
    corpus = (docstore.params.get("corpus") if docstore is not None else None) or "CORPUS"
    model = embeddings.params.get("model") if embeddings is not None else None
    return f"{corpus} --embed-model {model}" if model else str(corpus)


def damage_error(
    index_dir: str | Path, stage: str, damage: list[Damage], corpus: str | None = None
) -> LyreError:
    """One line for the first damaged file of ``stage``: which file, what is wrong, how to repair."""
    first = damage[0]
    more = f" (and {count(len(damage) - 1)} more file(s))" if len(damage) > 1 else ""
    return LyreError(
        f"{Path(index_dir) / first.path}: {first.problem}{more}; the {stage} stage is damaged; "
        f"rebuild it with `{repair_command(index_dir, corpus)}`"
    )


def require_intact(index_dir: str | Path, stage: str, record: StageRecord, corpus: str | None = None) -> None:
    """Raise :func:`damage_error` when :func:`quick_check` finds a file of ``stage`` damaged."""
    damage = quick_check(index_dir, record)
    if damage:
        raise damage_error(index_dir, stage, damage, corpus)


def damaged_stages(
    index_dir: Path, records: Mapping[str, StageRecord], stages: Iterable[str], *, verify_all: bool = False
) -> dict[str, list[Damage]]:
    """The damage found in the recorded files of ``stages`` (:func:`quick_check`, or with ``verify_all``
    :func:`verify`), by stage; stages without damage are left out."""
    check = verify if verify_all else quick_check
    found = {}
    for stage in stages:
        if stage in records:
            damage = check(index_dir, records[stage])
            if damage:
                found[stage] = damage
    return found
