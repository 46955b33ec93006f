"""Opening an index for reading (``lyre search``, ``lyre rerank``): one consistent, checked state.

:func:`open_for_search` is the one way the query side opens an index. It holds the folder's read lock
for the whole search (no ``lyre index``, ``ingest`` or ``encode`` can replace a file meanwhile; other
searches and job-array slices still run), reads the manifest once, refuses a stage that is missing or
incomplete with the command that builds it, and stats every recorded file of the stages asked for (a
truncated, emptied or deleted file is one line naming it and the repair command, never a traceback or a
silently wrong ranking). Hashes are not read here: that is ``lyre index --verify``'s job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.lock import index_lock
from lyre.indexes.manifest import DOCSTORE, HOW_TO_BUILD, MANIFEST_NAME, complete_records, read_manifest
from lyre.indexes.stages import damaged_stages, repair_hint, used_stages


@dataclass(frozen=True)
class OpenIndex:
    """An index folder as a search sees it while :func:`open_for_search` holds it."""

    index_dir: Path
    manifest: dict[str, Any]
    """The manifest, read once under the lock."""
    records: dict[str, dict[str, Any]]
    """The records of the complete stages (all of them, for a run's sidecar)."""


def require_complete(
    index_dir: Path, manifest: dict[str, Any], stages: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The records of the complete stages, once ``stages`` and those they are built from are all
    complete; otherwise one line saying which is missing and the command that builds it."""
    if not (index_dir / MANIFEST_NAME).exists():
        raise LyreError(
            f"{index_dir}: not a lyre index (no {MANIFEST_NAME}); build one with `{HOW_TO_BUILD[DOCSTORE]}`"
        )
    records = complete_records(manifest)
    for stage in used_stages(stages):
        if stage not in records:
            raise LyreError(
                f"{index_dir}: the {stage} stage is missing or incomplete; "
                f"run `{HOW_TO_BUILD[stage]}` to build or finish it"
            )
    return records


@contextlib.contextmanager
def open_for_search(
    index_dir: str | Path, stages: Sequence[str], *, wait: bool = False, if_built: Sequence[str] = ()
) -> Iterator[OpenIndex]:
    """Hold ``index_dir``'s read lock for the block and yield its manifest, once ``stages`` (and the
    stages they are built from) are complete and every file they recorded has its recorded size.

    ``wait``: when a writer holds the folder, wait for it instead of stopping with one line naming it.
    ``if_built``: stages checked only where the index has them (the passages of a passage index, which
    a search reads instead of the docstore): whether one is needed is known only from the manifest.
    """
    index_dir = Path(index_dir)
    with index_lock(index_dir, "read", wait=wait):
        manifest = read_manifest(index_dir)
        records = require_complete(index_dir, manifest, stages)
        needed = used_stages(stages)
        damaged = damaged_stages(index_dir, records, list(dict.fromkeys([*needed, *if_built])))
        if damaged:
            from lyre.indexes.integrity import damage_error

            stage, damage = next(iter(damaged.items()))
            raise damage_error(index_dir, stage, damage, repair_hint(records))
        yield OpenIndex(index_dir, manifest, records)
