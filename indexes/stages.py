"""Index stages and the one runner that builds them.

A stage turns files of the index folder into other files (docstore -> BM25, docstore -> embeddings,
embeddings -> dense). Each declares its name, its options dataclass (``basics/options.py``), ``validate``
(cheap: ranges, choices, combinations, what must already exist; never writes a file or loads a model),
``is_current`` (does the recorded stage already match these options?) and ``build``.

:func:`run_stages` validates the options of *every* stage of a command before any work, then for each stage
in order: keeps it when current, otherwise forgets it and every stage derived from it (their files describe
old content), builds it, and records it in the manifest last. So a killed command rerun redoes only what is
missing, and search never accepts a half-built stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

Options = TypeVar("Options", contravariant=True)


@dataclass(frozen=True)
class StageRecord:
    """What the manifest keeps of a complete stage: one shape for every stage."""

    summary: str
    """One line for the user (``bm25: 5,183 documents, 31,012 terms``)."""
    params: dict[str, Any]
    """The options that decide the stage's content; ``is_current`` compares against these."""
    counts: dict[str, Any] = field(default_factory=dict)
    """What was built: documents, terms, chunks, shards, tokens..."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Command, versions, time (``basics.provenance.provenance``)."""
    files: dict[str, Any] = field(default_factory=dict)
    """Files the stage produced (path relative to the index -> size, content hash), for integrity checks."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass(frozen=True)
class StageResult:
    """What ``build`` returns: the record to keep, or None when the stage is not complete yet (one slice of
    a job array encoded its chunks; the others are still running) and later stages must wait."""

    summary: str
    record: StageRecord | None


class Stage(Protocol, Generic[Options]):
    """One step of ``lyre index``."""

    name: ClassVar[str]

    def validate(self, index_dir: Path, options: Options) -> None: ...

    def is_current(self, index_dir: Path, record: StageRecord, options: Options) -> bool: ...

    def build(self, index_dir: Path, options: Options) -> StageResult: ...


def run_stages(
    index_dir: Path, plan: Sequence[tuple[Stage[Any], Any]], *, overwrite: bool = False
) -> list[str]:
    """Validate every stage's options, then build what is not current, in order; one summary line each."""
    from indexes.manifest import invalidate, record_stage, stage_record

    for stage, options in plan:
        stage.validate(index_dir, options)
    lines = []
    for stage, options in plan:
        recorded = stage_record(index_dir, stage.name)
        if recorded is not None and not overwrite:
            record = StageRecord.from_dict(recorded)
            if stage.is_current(index_dir, record, options):
                lines.append(f"{stage.name}: up to date ({record.summary})")
                continue
        invalidate(index_dir, stage.name)
        result = stage.build(index_dir, options)
        lines.append(result.summary)
        if result.record is None:
            break
        record_stage(index_dir, stage.name, result.record.to_dict())
    return lines
