"""Index stages and the one runner that builds them.

A stage turns files of the index folder into other files (corpus -> docstore, docstore -> BM25,
docstore -> embeddings, embeddings -> dense). Each declares its name, its options dataclass
(``basics/declared.py``), ``validate`` (cheap: ranges, choices, combinations, what must already exist;
never writes a file or loads a model), ``is_current`` (does the recorded stage already match these
options?) and ``build``.

:func:`run_stages` validates the options of *every* stage of a command before any work, and decides
up front which stages are current: a stage that is not current is rebuilt, and every stage derived from
it with it. Then, in order, it builds what must be built and records each stage in the manifest last.
So a killed command rerun redoes only what is missing, a rejected option changes nothing, and search
never accepts a half-built stage.

Trust under faults, all decided here for every command that writes an index:

- one writer per folder: the runner holds the folder's lock for the whole command (write, or the shared
  slice lock for one slice of a job array), and reads the manifest only under it;
- integrity: each stage records the size and SHA-256 of its files; the runner checks the sizes of every
  stage the command uses and the hashes of their metadata files (``verify``: of every file), rebuilds a
  damaged stage it builds (with what derives from it), and refuses, naming the file and the repair
  command, a damaged stage it only reads; a damaged manifest is one line, or with ``verify`` (or
  ``overwrite``) the reason to rebuild every stage;
- a command that fails on a folder it created leaves no empty folder behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from lyre.basics import progress
from lyre.basics.atomic import write_json_atomic
from lyre.basics.declared import check_options, option
from lyre.basics.errors import LyreError, opt
from lyre.basics.lock import IndexLock, index_lock
from lyre.basics.numbers import count
from lyre.indexes.cache_store import verify_cache
from lyre.indexes.integrity import Damage, damage_error, damaged_stages, file_entries, repair_hint
from lyre.indexes.manifest import (
    DERIVED,
    DOCSTORE,
    EMBEDDINGS,
    MANIFEST_NAME,
    STAGES,
    Manifest,
    how_to_build,
    invalidate,
    load_manifest,
    record_stage,
)
from lyre.indexes.metadata import FileEntry, MetadataError, StageRecord

Options = TypeVar("Options", contravariant=True)

Invalidate = Callable[[], None]
"""Given to ``build`` as ``invalidate``: call it right before the stage first changes its files. It clears
the stage's record and removes the stages derived from it (whose files describe the old content). A stage
that builds into a temporary folder calls it just before swapping that folder in, so a failed rebuild keeps
the previous, complete stage; the runner calls it itself, if the stage did not, before recording."""


def overwrite_option() -> Any:
    """The ``overwrite`` field every stage's options carry; the CLI merges them into one flag."""
    return option(False, "Rebuild even what is up to date (a new corpus or another model needs it).")


@dataclass(frozen=True)
class StageResult:
    """What ``build`` returns: the record to keep, or None when the stage is not complete yet (one slice of
    a job array encoded its chunks; the others are still running) and later stages must wait."""

    summary: str
    record: StageRecord | None
    work: dict[str, Any] = field(default_factory=dict)
    """What this run did (chunks encoded, seconds, tokens per second...), beside what the stage holds."""


Upstream = Mapping[str, "StageRecord | None"]
"""What ``validate`` knows of the index as the stage will find it: for each stage that will be complete
by then, its record, or None when this command builds it first (its content is not known yet). A stage
missing from the mapping will not exist."""


class Stage(Protocol, Generic[Options]):
    """One step of building an index.

    A stage that resumes from files it finds (the embedding chunks, the dense shards) may also define
    ``discard_damaged(index_dir, paths)``: the runner calls it before rebuilding the stage because the
    recorded files ``paths`` (relative to the index) are damaged, so the stage redoes them instead of
    resuming from them. Stages that rebuild into a fresh folder need none."""

    name: ClassVar[str]

    def validate(self, index_dir: Path, options: Options, upstream: Upstream) -> None: ...

    def is_current(self, index_dir: Path, record: StageRecord, options: Options) -> bool: ...

    def build(self, index_dir: Path, options: Options, invalidate: Invalidate) -> StageResult: ...


def required_upstream(index_dir: Path, upstream: Upstream, stage: str) -> StageRecord | None:
    """The record of ``stage``, which the validating stage reads (None: built earlier in this command); a
    one-line error with the command that builds it when it will not exist."""
    if stage not in upstream:
        how = how_to_build(stage, index_dir)
        raise LyreError(f"{index_dir}: the {stage} stage is missing or incomplete; run `{how}` first")
    return upstream[stage]


@dataclass(frozen=True)
class WriterOptions:
    """How a command that writes an index meets another command using the same folder."""

    wait: bool = option(
        False, "When another lyre command is using the index folder, wait for it instead of stopping."
    )


@dataclass(frozen=True)
class VerifyOptions:
    """Whether ``lyre index`` reads every file back before trusting it."""

    verify: bool = option(
        False,
        "Check the SHA-256 of every index file (reads the whole index) and rebuild only the stages that "
        "fail, with what is built from them.",
    )


def used_stages(planned: Sequence[str]) -> list[str]:
    """The planned stages and every stage they are built from, in build order."""
    used = set(planned)
    for stage in reversed(STAGES):
        if any(child in used for child in DERIVED[stage]):
            used.add(stage)
    return [stage for stage in STAGES if stage in used]


@dataclass
class _Decision:
    """What a command will do, decided under the index lock from the manifest as it is then."""

    records: dict[str, StageRecord]
    """The complete stages' records as the manifest holds them."""
    upstream: dict[str, StageRecord | None]
    current: dict[str, bool]
    damaged: dict[str, list[Damage]]
    set_aside: str | None
    """Why the manifest was set aside (unreadable, damaged), when it was: every stage is then rebuilt."""


def _read_records(
    index_dir: Path, plan: Sequence[tuple[Stage[Any], Any]], verify: bool
) -> tuple[dict[str, StageRecord], str | None]:
    """The complete records of the manifest, and why it was set aside when it was. A manifest that is not
    one (garbage, a JSON list, a value of the wrong type, another format) is one line, unless the command
    rebuilds every stage from the corpus: with ``overwrite``, or, for a damaged manifest, with ``verify``
    (which rebuilds what fails, and with a damaged manifest no record can be trusted). A manifest of a
    newer format is set aside only by ``overwrite``: it is another lyre's index, not damage."""
    try:
        return dict(load_manifest(index_dir).stages), None
    except LyreError as error:
        from_corpus = plan[0][0].name == DOCSTORE
        overwrite = all(getattr(options, "overwrite", False) for _, options in plan)
        repairs = verify and isinstance(error, MetadataError)
        if not (from_corpus and (overwrite or repairs)):
            raise
        return {}, error.problem if isinstance(error, MetadataError) else "unreadable"


def _decide(index_dir: Path, plan: Sequence[tuple[Stage[Any], Any]], verify: bool, sliced: bool) -> _Decision:
    """Validate every stage against the manifest, check the files of every stage used, and decide which
    stages are current. Damage in a planned stage rebuilds it; damage in a stage the command only reads
    is one line naming the file and the repair command."""
    records, set_aside = _read_records(index_dir, plan, verify)
    upstream: dict[str, StageRecord | None] = dict(records)
    planned = [stage.name for stage, _ in plan]
    damaged = damaged_stages(index_dir, records, used_stages(planned), verify_all=verify)
    for name, damage in damaged.items():
        if name not in planned:
            raise damage_error(index_dir, name, damage, repair_hint(records))
    if sliced and any(getattr(options, "overwrite", False) for _, options in plan):
        raise LyreError(
            f"{index_dir}: {opt('overwrite')} in a job-array slice would delete what the other slices are "
            "writing; overwrite once without slice options, or remove the stage's folder before starting "
            "the slices"
        )
    current: dict[str, bool] = {}
    for stage, options in plan:
        stage.validate(index_dir, options, upstream)
        previous = upstream.get(stage.name)
        current[stage.name] = (
            previous is not None
            and stage.name not in damaged
            and not getattr(options, "overwrite", False)
            and stage.is_current(index_dir, previous, options)
        )
        if not current[stage.name]:
            upstream[stage.name] = None
            for derived in DERIVED[stage.name]:
                upstream.pop(derived, None)
    return _Decision(records, upstream, current, damaged, set_aside)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet: what a command that
    creates ``path`` creates."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_unfinished(index_dir: Path, created: Path) -> None:
    """After a failed command on an index folder it created (``created``: that folder or the outermost
    parent it made for it): remove it unless a stage completed (a rerun resumes from that), so a failed
    ingest leaves no empty index behind."""
    try:
        if load_manifest(index_dir).stages:
            return
    except LyreError:
        pass
    shutil.rmtree(created, ignore_errors=True)


def run_stages(
    index_dir: Path,
    plan: Sequence[tuple[Stage[Any], Any]],
    *,
    wait: bool = False,
    verify: bool = False,
    sliced: bool = False,
) -> list[StageResult]:
    """Validate every stage's options, then build what is not current, in order; one result per stage
    that ran or was found current (a stage after one that returned no record is not reached).

    The whole command holds the index folder's lock (:func:`basics.lock.index_lock`): the write lock, or
    with ``sliced`` (one slice of a job array) the shared slice lock, which may build only the embeddings
    stage's chunks; a slice that must build any other stage first becomes the writer (waiting for the other
    slices) and decides again. ``wait``: wait for another command holding the folder instead of stopping
    with one line naming it. A slice always waits: the writer it meets is most often another slice of its
    array building the stages they share, and refusing would fail the array's tasks that start meanwhile.
    ``verify``: hash every file of the stages used instead of only checking sizes. An ``overwrite``
    option set in a stage's options rebuilds that stage even when it is current."""
    index_dir = Path(index_dir)
    if index_dir.exists() and not index_dir.is_dir():
        raise LyreError(f"{index_dir}: is a file; pass a folder for the index (choose another {opt('out')})")
    for _, options in plan:
        check_options(options)  # before the lock: a typo never creates the folder
    created = _first_missing(Path(os.path.abspath(index_dir)))
    with index_lock(index_dir, "slice" if sliced else "write", wait=wait or sliced) as lock:
        try:
            return _run_locked(index_dir, plan, lock, verify=verify, sliced=sliced)
        except BaseException:
            if created is not None:
                _remove_unfinished(index_dir, created)
            raise


def _run_locked(
    index_dir: Path, plan: Sequence[tuple[Stage[Any], Any]], lock: IndexLock, *, verify: bool, sliced: bool
) -> list[StageResult]:
    decision = _decide(index_dir, plan, verify, sliced)
    if lock.mode != "write" and (
        decision.damaged
        or any(not decision.current[stage.name] and stage.name != EMBEDDINGS for stage, _ in plan)
    ):
        # Only the chunks of its own slice are a slice's to write: a shared stage to build, or damaged
        # files to discard, need the folder alone. Promoting waits for the other slices; what they
        # finished meanwhile is decided again.
        lock.promote()
        decision = _decide(index_dir, plan, verify, sliced)
    if verify:
        if decision.set_aside is None:  # else no record is left to verify: the line below says why
            say_verified(index_dir, decision.records, decision.damaged)
        verify_cache(index_dir)  # every entry's checksum; under this write lock no search holds it
    if decision.set_aside is not None:
        progress.say(f"{index_dir / MANIFEST_NAME}: {decision.set_aside}; rebuilding every stage")
        write_json_atomic(index_dir / MANIFEST_NAME, Manifest().to_dict())

    results = []
    for stage, options in plan:
        kept = decision.upstream.get(stage.name)
        if decision.current[stage.name] and kept is not None:
            results.append(StageResult(f"{stage.name}: up to date ({kept.summary})", kept))
            continue
        damage = decision.damaged.get(stage.name)
        if damage:
            first = damage[0]
            progress.say(f"{index_dir / first.path}: {first.problem}; rebuilding the {stage.name} stage")
            discard = getattr(stage, "discard_damaged", None)
            if discard is not None:
                discard(index_dir, [d.path for d in damage])
        invalidated = False

        def invalidate_once(name: str = stage.name) -> None:
            nonlocal invalidated
            if not invalidated:
                invalidate(index_dir, name)
                invalidated = True

        result = stage.build(index_dir, options, invalidate_once)
        results.append(result)
        if result.record is None:
            break
        invalidate_once()
        record_stage(index_dir, stage.name, result.record)
    return results


def say_verified(
    index_dir: Path, records: Mapping[str, StageRecord], damaged: Mapping[str, list[Damage]]
) -> None:
    """One status line after ``verify``: every file intact, or how many are damaged."""
    files = sum(len(record.files) for record in records.values())
    bad = sum(len(damage) for damage in damaged.values())
    if bad:
        progress.say(
            f"verify: {count(bad)} of {count(files, 'recorded files')} damaged in {', '.join(damaged)}"
        )
    else:
        progress.say(
            f"verify: all {count(files, 'recorded files')} of {index_dir} intact (sizes and SHA-256)"
        )


def stage_files(index_dir: Path, folder: str) -> dict[str, FileEntry]:
    """Size and SHA-256 of every file under ``INDEX/folder`` (hidden temporaries left out), keyed by its
    path relative to the index: the ``files`` of a stage's record, checked by every later command."""
    return file_entries(index_dir, [folder])


def run_stage(
    index_dir: Path, stage: Stage[Any], options: Any, *, wait: bool = False, sliced: bool = False
) -> StageResult:
    """One stage through the runner (``lyre ingest``, ``lyre encode``)."""
    return run_stages(index_dir, [(stage, options)], wait=wait, sliced=sliced)[0]
