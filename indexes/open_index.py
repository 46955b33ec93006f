"""Opening an index for reading (``lyre search``, ``lyre rerank``): one consistent, checked state.

:func:`open_for_search` is the one way the query side opens an index. It holds the folder's read lock
for the whole search (no ``lyre index``, ``ingest`` or ``encode`` can replace a file meanwhile; other
searches and job-array slices still run), reads the manifest once through the metadata reader (a
manifest of the wrong shape is one line), refuses a stage that is missing or incomplete with the command
that builds it, and runs the quick integrity check on every recorded file of the stages asked for
(:func:`indexes.integrity.quick_check`: a truncated, emptied or deleted file, or a metadata file whose
bytes changed, is one line naming it and the repair command, never a traceback or a silently wrong
ranking). The data files' hashes are not read here: that is ``lyre index --verify``'s job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.lock import index_lock
from lyre.indexes.integrity import damage_error, damaged_stages, repair_hint
from lyre.indexes.manifest import DOCSTORE, MANIFEST_NAME, Manifest, how_to_build, load_manifest
from lyre.indexes.metadata import StageRecord
from lyre.indexes.stages import used_stages


@dataclass(frozen=True)
class OpenIndex:
    """An index folder as a search sees it while :func:`open_for_search` holds it."""

    index_dir: Path
    typed: Manifest
    """The manifest, read once under the lock; its stages' files may be read with
    :meth:`indexes.manifest.StageFolder.locate` given this manifest."""

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest in its JSON form (what the plan and run sidecars use)."""
        return self.typed.to_dict()

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """The records of the complete stages (all of them, for a run's sidecar), in their JSON form."""
        return self.typed.to_dict()["stages"]


def require_complete(
    index_dir: Path, manifest: Manifest | Mapping[str, Any], stages: Sequence[str]
) -> dict[str, Any]:
    """The records of the complete stages, once ``stages`` and those they are built from are all
    complete; otherwise one line saying which is missing and the command that builds it. ``manifest``:
    typed, or in its JSON form (its records are then returned in that form)."""
    if not (index_dir / MANIFEST_NAME).exists():
        how = how_to_build(DOCSTORE, index_dir)
        raise LyreError(f"{index_dir}: not a lyre index (no {MANIFEST_NAME}); build one with `{how}`")
    records = manifest.stages if isinstance(manifest, Manifest) else manifest["stages"]
    for stage in used_stages(stages):
        if stage not in records:
            raise LyreError(
                f"{index_dir}: the {stage} stage is missing or incomplete; "
                f"run `{how_to_build(stage, index_dir)}` to build or finish it"
            )
    return dict(records)


@contextlib.contextmanager
def open_for_search(
    index_dir: str | Path, stages: Sequence[str], *, wait: bool = False, if_built: Sequence[str] = ()
) -> Iterator[OpenIndex]:
    """Hold ``index_dir``'s read lock for the block and yield its manifest, once ``stages`` (and the
    stages they are built from) are complete and every file they recorded passes the quick check.

    ``wait``: when a writer holds the folder, wait for it instead of stopping with one line naming it.
    ``if_built``: stages checked only where the index has them (the passages of a passage index, which
    a search reads instead of the docstore): whether one is needed is known only from the manifest.
    """
    index_dir = Path(index_dir)
    with index_lock(index_dir, "read", wait=wait):
        manifest = load_manifest(index_dir)
        records: dict[str, StageRecord] = require_complete(index_dir, manifest, stages)
        needed = list(dict.fromkeys([*used_stages(stages), *if_built]))
        damaged = damaged_stages(index_dir, records, needed)
        if damaged:
            stage, damage = next(iter(damaged.items()))
            raise damage_error(index_dir, stage, damage, repair_hint(records))
        yield OpenIndex(index_dir, manifest)
