"""Sizes against what exists: a search's depth, k, refine and nprobe capped to what an index's manifest
records (a notice only for values asked for), passage depths capped to the passages held, and memory
estimates refused against the memory the process may really use (an address-space limit included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPOSITORY
from lyre.retrieval.aggregation import rule
from lyre.retrieval.options import SearchOptions
from lyre.retrieval.passage_search import PassageSearch
from lyre.retrieval.sizes import HIT_BYTES, IndexSize, list_bytes

INDEX = Path("/data/index")


def manifest(documents: int, vectors: int | None = None, passages: int | None = None) -> dict:
    """A manifest with the stage counts the caps read (as ``lyre index`` records them)."""
    stages = {"docstore": {"complete": True, "counts": {"documents": documents}}}
    if vectors is not None:
        stages["dense"] = {"complete": True, "counts": {"vectors": vectors}}
    if passages is not None:
        stages["passages"] = {"complete": True, "counts": {"documents": documents, "passages": passages}}
    return {"stages": stages}


def test_asked_sizes_beyond_the_index_are_capped_and_named_once() -> None:
    size = IndexSize.of(INDEX, manifest(120, vectors=120), passage_rows=False, mode="hybrid")
    asked = SearchOptions(depth=10**8, k=10**8, refine=10**6, nprobe=5000)
    capped, clauses = size.cap(asked)
    assert (capped.depth, capped.k, capped.refine, capped.nprobe) == (120, 120, 120, 120)
    assert clauses == [
        f"depth 100000000 and k 100000000 are more than the 120 documents of {INDEX}; searching all 120",
        f"refine 1000000 and nprobe 5000 are more than the 120 vectors of {INDEX}'s dense index; using 120",
    ]


def test_defaults_beyond_a_small_index_are_capped_silently_and_sizes_within_it_kept() -> None:
    size = IndexSize.of(INDEX, manifest(120, vectors=120), passage_rows=False, mode="hybrid")
    capped, clauses = size.cap(SearchOptions())  # depth and k 1000 by default
    assert (capped.depth, capped.k, clauses) == (120, 120, [])
    within = SearchOptions(depth=50, k=10, refine=100, nprobe=8)
    assert size.cap(within) == (within, [])


def test_without_a_dense_side_refine_and_nprobe_are_left_alone() -> None:
    size = IndexSize.of(INDEX, manifest(120, vectors=120), passage_rows=False, mode="bm25")
    capped, clauses = size.cap(SearchOptions(depth=500, k=500, refine=10**6, nprobe=10**6))
    assert (capped.depth, capped.refine, capped.nprobe) == (120, 10**6, 10**6)
    assert clauses == [f"depth 500 and k 500 are more than the 120 documents of {INDEX}; searching all 120"]


def test_a_passage_run_is_capped_to_the_passages() -> None:
    size = IndexSize.of(INDEX, manifest(120, passages=400), passage_rows=True, mode="bm25")
    capped, clauses = size.cap(SearchOptions(depth=5000, k=100))
    assert (capped.depth, capped.k) == (400, 100)
    assert clauses == [f"depth 5000 is more than the 400 passages of {INDEX}; searching all 400"]


def test_a_passage_side_never_retrieves_more_passages_than_the_index_holds() -> None:
    search = PassageSearch(rule("maxp"), 3, passages_per_document=2.5, passages=300)
    assert search.factor == 3 and search.side_depth(10) == 30 and search.side_depth(1000) == 300


def test_list_memory_is_queries_times_depth_times_lists() -> None:
    assert list_bytes(30, 120, 2) == 30 * 120 * 2 * HIT_BYTES


LIMITED = """
import resource
import psutil
from lyre.basics.errors import OptionError
from lyre.retrieval.sizes import available_memory, check_memory

room = 256 << 20
resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + room, resource.RLIM_INFINITY))
assert available_memory() <= room, available_memory()
check_memory("samples", 1000, 64 << 20, "the resampled means")
try:
    check_memory("samples", 10**6, 512 << 20, "the resampled means")
except OptionError as error:
    print(error)
"""


def test_memory_is_refused_beyond_an_address_space_limit() -> None:
    """``ulimit -v`` (as cluster jobs set it) lowers what counts as available: 64 MiB fits in 256 MiB of
    room, 512 MiB is refused in one line with both numbers."""
    child = subprocess.run([sys.executable, "-c", LIMITED], capture_output=True, text=True, cwd=REPOSITORY)
    assert child.returncode == 0, child.stderr
    message = child.stdout.strip()
    assert message.startswith(
        "samples 1000000: the resampled means would need about 512.0 MiB of memory, and "
    )
    available = message.split(", and ")[1]
    assert available.endswith(" MiB is available; lower it") and float(available.split()[0]) <= 256


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_an_index_without_recorded_counts_is_not_capped(mode: str) -> None:
    size = IndexSize.of(INDEX, {"stages": {}}, passage_rows=False, mode=mode)
    asked = SearchOptions(depth=10**8, k=10**8)
    assert size.cap(asked) == (asked, [])
