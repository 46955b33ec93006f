"""Sizes checked against what exists before anything is allocated.

Two rules, one per kind of size:

- **Capped to the index.** A search's ``depth``, ``k``, ``refine`` and ``nprobe`` beyond what the index
  holds are lowered to it: a search deeper than the corpus returns every match either way, so the run is
  the same, only the arrays shrink (``depth 100000000`` on 120 documents once asked numpy for 22 GiB). A
  capped value that was asked for (not left at its declared default) is said once, in one line.
- **Estimated, then refused.** Work that grows with an option and that nothing on disk bounds (compare's
  ``samples``, tune's grid, a search's queries x depth) is estimated before it is allocated, and refused
  with one line saying what it would need and what is available: the memory this process may still use
  (the system's available memory, lowered by a cgroup limit and by ``ulimit -v``).
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyre.basics import progress
from lyre.basics.errors import OptionError
from lyre.basics.numbers import count, size
from lyre.indexes.manifest import DENSE, DOCSTORE, PASSAGES, complete_records
from lyre.retrieval.options import SearchOptions

if TYPE_CHECKING:
    from lyre.retrieval.passage_search import PassageSearch

HIT_BYTES = 160
"""Memory of one (query, document) entry of a list in a search: a ``{docid: score}`` entry of a run
(about 110 bytes with a 13-character docid, measured with tracemalloc) plus its share of the arrays and
aligned lists it passes through."""
MEMORY_SHARE = 0.8
"""Of the available memory, what one estimated allocation may take: the rest is the process's own."""
CGROUP = Path("/sys/fs/cgroup")


def _cgroup_room() -> int | None:
    """What the cgroup (v2) of this process may still allocate (containers, Slurm jobs), or None."""
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def _address_space_room() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) still allows this process to map, or None without a limit."""
    import psutil

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(soft - psutil.Process().memory_info().vms, 0)


def available_memory() -> int:
    """Bytes this process may still allocate: the least of the system's available memory, its cgroup's
    room and its address-space limit's room."""
    import psutil

    rooms = [psutil.virtual_memory().available, _cgroup_room(), _address_space_room()]
    return min(room for room in rooms if room is not None)


def check_memory(option: str, value: Any, needed: int, what: str, other_fix: str = "") -> None:
    """Refuse ``value`` of ``option`` when ``what`` would need more than :data:`MEMORY_SHARE` of the memory
    available (one line with both numbers), before anything is allocated; ``other_fix``: another way out
    than lowering the value (``or search the queries in parts``)."""
    available = available_memory()
    if needed > available * MEMORY_SHARE:
        raise OptionError(
            option,
            value,
            f"{what} would need about {size(needed)} of memory, and {size(available)} is "
            f"available; lower it{other_fix}",
        )


def list_bytes(queries: int, depth: int, lists: int) -> int:
    """Estimated memory of ``lists`` lists of ``depth`` documents for each of ``queries`` queries."""
    return queries * depth * lists * HIT_BYTES


def _rows(records: Mapping[str, Mapping[str, Any]], stage: str, key: str) -> int | None:
    counts = records.get(stage, {}).get("counts", {})
    value = counts.get(key)
    return value if isinstance(value, int) and value >= 0 else None


@dataclass(frozen=True)
class IndexSize:
    """What an index holds, for capping a search's sizes: the rows its runs list (``documents``; passages
    for a passage run), and the vectors of its dense index (None without one)."""

    index_dir: Path
    rows: int | None
    unit: str
    vectors: int | None
    """The dense index's vectors (None: no dense side searched); nprobe and refine never exceed them."""

    @classmethod
    def of(cls, index_dir: Path, manifest: Mapping[str, Any], passage_rows: bool, mode: str) -> IndexSize:
        """The sizes recorded in ``manifest``; ``passage_rows``: the run lists passages (a passage index
        searched without aggregation), else documents; ``mode``: without a dense side, nothing bounds
        (or reads) refine and nprobe."""
        records = complete_records(dict(manifest))
        if passage_rows:
            rows, unit = _rows(records, PASSAGES, "passages"), "passages"
        else:
            rows, unit = _rows(records, DOCSTORE, "documents"), "documents"
        vectors = _rows(records, DENSE, "vectors") if mode != "bm25" else None
        return cls(index_dir, rows, unit, vectors)

    def cap(self, options: SearchOptions) -> tuple[SearchOptions, list[str]]:
        """``options`` with depth and k at most the rows, refine and nprobe at most the vectors (IVF lists
        are fewer), and one clause per lowered value that was asked for (a default beyond a small corpus
        is lowered silently)."""
        defaults = {field.name: field.default for field in fields(SearchOptions)}
        changes: dict[str, Any] = {}  # fields named at run time: typed by SearchOptions, not here
        asked: dict[str, list[str]] = {"rows": [], "vectors": []}
        bounds: dict[str, int] = {}
        for name, bound, kind in (
            ("depth", self.rows, "rows"),
            ("k", self.rows, "rows"),
            ("refine", self.vectors, "vectors"),
            ("nprobe", self.vectors, "vectors"),
        ):
            value = getattr(options, name)
            if value is None or bound is None or value <= max(bound, 1):
                continue
            changes[name] = max(bound, 1)
            bounds[kind] = bound
            if value != defaults[name]:
                asked[kind].append(f"{name} {value}")
        clauses = []
        if asked["rows"]:
            verb = "is" if len(asked["rows"]) == 1 else "are"
            clauses.append(
                f"{' and '.join(asked['rows'])} {verb} more than the {count(bounds['rows'], self.unit)} of "
                f"{self.index_dir}; searching all {count(bounds['rows'])}"
            )
        if asked["vectors"]:
            verb = "is" if len(asked["vectors"]) == 1 else "are"
            clauses.append(
                f"{' and '.join(asked['vectors'])} {verb} more than the "
                f"{count(bounds['vectors'], 'vectors')} of {self.index_dir}'s dense index; "
                f"using {count(bounds['vectors'])}"
            )
        return replace(options, **changes), clauses


def fit_to_index(
    index_dir: Path, manifest: Mapping[str, Any], options: SearchOptions, passages: PassageSearch | None
) -> SearchOptions:
    """``options`` capped to what the index holds (:meth:`IndexSize.cap`), what was lowered said once.
    ``passages``: how a passage index is searched (its run lists passages without aggregation)."""
    passage_rows = passages is not None and not passages.rule.document_level
    capped, clauses = IndexSize.of(index_dir, manifest, passage_rows, options.mode).cap(options)
    if clauses:
        progress.say("; ".join(clauses))
    return capped


__all__ = ["IndexSize", "available_memory", "check_memory", "fit_to_index", "list_bytes"]
