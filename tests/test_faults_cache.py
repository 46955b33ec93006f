"""The index's cache under damage (issue 18, class 3): a flipped byte in ``INDEX/cache/cache.sqlite``.

Whatever byte is damaged, a search writes the run an uncached search writes (never a document id that is
not in the corpus): an entry whose checksum fails is dropped and computed again, a database SQLite finds
damaged turns the cache off; either is said in one ``warning:`` line, and the command succeeds.
``lyre index --verify`` checks every entry's checksum, drops the bad ones and says how many, and starts a
damaged database again. On the sample's BM25 index: no model is needed to fill a cache with lists.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import SAMPLE, LyreCli
from lyre.basics import progress
from lyre.formats.queries import read_queries
from lyre.formats.records import Run
from lyre.formats.runs import meta_path
from lyre.indexes.cache_store import CacheOptions, SearchCache, cache_path, verify_cache
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan

CORPUS = SAMPLE / "corpus.jsonl"
QUERIES = SAMPLE / "queries.tsv"
K = 20
LIST_START = b'["D'
"""Where the docids of a cached list begin (a JSON list of the sample's ids, D001 ... D120)."""
CHECKSUM_WARNING = "a cached entry failed its checksum; dropped and computed again"
DATABASE_WARNING = "the cache database is damaged"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> Path:
    """The sample's BM25 index with every query's list cached (each test copies it)."""
    index = tmp_path_factory.mktemp("cache-faults") / "index"
    lyre("-q", "index", CORPUS, "--out", index, "--bm25-only")
    search(lyre, index, index.parent / "filling.run")
    return index


@pytest.fixture(scope="module")
def expected(built: Path, lyre: LyreCli) -> bytes:
    """The run an uncached search writes."""
    return search(lyre, built, built.parent / "uncached.run", "--no-cache")[0]


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def search(lyre: LyreCli, index: Path, out: Path, *extra: str) -> tuple[bytes, list[str], dict]:
    """``lyre -q search`` (BM25, k 20): the run's bytes, the lines on stderr, the sidecar's cache record."""
    result = lyre(
        "-q", "search", "--index", index, "--queries", QUERIES, "--mode", "bm25", "--k", str(K),
        "--depth", str(K), "--rerank-depth", "0", "--out", out, *extra,
    )  # fmt: skip
    return out.read_bytes(), result.stderr.splitlines(), json.loads(meta_path(out).read_text())["cache"]


def flip(path: Path, *offsets: int, mask: int = 0xFF) -> None:
    """Flip the bits of ``mask`` in the bytes at ``offsets`` of ``path``."""
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset] ^= mask
    path.write_bytes(bytes(data))


def list_offsets(database: Path) -> list[int]:
    """The offset of the first docid character of every cached list in the database file."""
    data = database.read_bytes()
    found, start = [], data.find(LIST_START)
    while start >= 0:
        found.append(start + 2)
        start = data.find(LIST_START, start + 1)
    return found


def entries(database: Path) -> int:
    connection = sqlite3.connect(database)
    try:
        return connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        connection.close()


@pytest.mark.slow
def test_a_damaged_entry_is_dropped_said_once_and_the_run_is_the_uncached_one(
    index: Path, expected: bytes, lyre: LyreCli, tmp_path: Path
) -> None:
    database = cache_path(index)
    first, second = list_offsets(database)[:2]
    flip(database, first, second, mask=0x01)  # "D" -> "E": ids that are not in the corpus

    run, stderr, cache = search(lyre, index, tmp_path / "damaged.run")
    assert run == expected
    assert stderr == [
        f"warning: {database}: {CHECKSUM_WARNING} "
        f"(`lyre index {CORPUS} --out {index} --verify` checks every entry)"
    ]
    assert cache["damaged"] == 2 and cache["misses"] == {"side": 2} and cache["hits"] == {"side": 28}

    run, stderr, cache = search(lyre, index, tmp_path / "again.run")  # the two were computed and kept
    assert run == expected and stderr == [] and cache["hits"] == {"side": 30} and cache["damaged"] == 0


@pytest.mark.slow
def test_verify_drops_the_damaged_entries_and_says_how_many(
    index: Path, expected: bytes, lyre: LyreCli, tmp_path: Path
) -> None:
    database = cache_path(index)
    flip(database, *list_offsets(database)[:3], mask=0x01)

    verified = lyre("index", CORPUS, "--out", index, "--bm25-only", "--verify")
    assert f"verify: 3 of 30 cache entries in {database} failed their checksum; dropped" in verified.stderr
    assert entries(database) == 27
    run, stderr, cache = search(lyre, index, tmp_path / "after.run")
    assert run == expected and stderr == [] and cache["misses"] == {"side": 3}

    verified = lyre("index", CORPUS, "--out", index, "--bm25-only", "--verify")
    assert f"verify: all 30 cache entries in {database} intact (checksums)" in verified.stderr


@pytest.mark.slow
def test_a_database_sqlite_finds_damaged_is_searched_around_and_verify_starts_it_again(
    index: Path, expected: bytes, lyre: LyreCli, tmp_path: Path
) -> None:
    database = cache_path(index)
    flip(database, 0)  # the header's magic string

    run, stderr, cache = search(lyre, index, tmp_path / "damaged.run")
    assert run == expected and cache is None
    assert stderr == [
        f"warning: {database}: {DATABASE_WARNING} (file is not a database); searching without it "
        f"(`lyre index {CORPUS} --out {index} --verify` starts it again)"
    ]
    verified = lyre("index", CORPUS, "--out", index, "--bm25-only", "--verify")
    assert f"verify: cache {database} was damaged (file is not a database); removed" in verified.stderr
    assert not database.exists()
    run, stderr, cache = search(lyre, index, tmp_path / "fresh.run")
    assert run == expected and stderr == [] and cache["misses"] == {"side": 30}


def test_a_value_changed_in_place_fails_its_checksum_on_read_and_in_verify(tmp_path: Path) -> None:
    """Damage SQLite cannot see (a value's bytes, a checksum, another row's checksum, a value's type):
    the store hands back only what it wrote, drops the rest, and says so once."""
    store = SearchCache.open(tmp_path, CacheOptions())
    assert store is not None
    store.put({"a": b"first value", "b": b"second value", "c": b"third value", "d": b"fourth value"})
    connection = sqlite3.connect(cache_path(tmp_path), isolation_level=None)
    connection.execute("UPDATE entries SET value = ? WHERE key = 'a'", (b"first valuf",))
    connection.execute("UPDATE entries SET checksum = zeroblob(16) WHERE key = 'b'")
    other = "SELECT checksum FROM entries WHERE key = 'd'"
    connection.execute(f"UPDATE entries SET checksum = ({other}) WHERE key = 'c'")
    connection.execute("UPDATE entries SET value = 12 WHERE key = 'd'")  # a damaged type byte
    connection.close()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert store.get(["a", "b", "c", "d"]) == {}
    assert stderr.getvalue().count("warning:") == 1 and store.damaged == 4
    assert entries(cache_path(tmp_path)) == 0  # dropped
    store.put({"a": b"first value", "b": b"second value"})
    assert store.get(["a", "b"]) == {"a": b"first value", "b": b"second value"}
    store.close()

    connection = sqlite3.connect(cache_path(tmp_path), isolation_level=None)
    connection.execute("UPDATE entries SET value = ? WHERE key = 'b'", (b"second valud",))
    connection.close()
    with contextlib.redirect_stderr(io.StringIO()) as said:
        verify_cache(tmp_path)
    assert f"verify: 1 of 2 cache entries in {cache_path(tmp_path)} failed their checksum" in said.getvalue()
    assert entries(cache_path(tmp_path)) == 1


@pytest.mark.slow
def test_a_flipped_byte_anywhere_in_the_database_leaves_the_run_as_uncached(index: Path) -> None:
    """Every 61st byte of a filled cache flipped in turn (each time from the intact file): each search's
    run equals the uncached one, with at most one warning; both kinds of damage are met on the way."""
    progress.set_quiet(True)  # warnings are printed all the same
    queries = read_queries(QUERIES)
    options, rerank = SearchOptions(mode="bm25", k=K, depth=K), RerankOptions(rerank_depth=0)
    corpus = {json.loads(line)["_id"] for line in CORPUS.read_text(encoding="utf-8").splitlines()}

    def run(cache: CacheOptions | None) -> tuple[Run, list[str]]:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            plan = SearchPlan.open(index, options, rerank, cache)
            found = plan.search(queries)
            if plan.cache is not None:
                plan.cache.close()
        return found, stderr.getvalue().splitlines()

    try:
        expected, _ = run(None)
        run(CacheOptions())
        database = cache_path(index)
        intact = database.read_bytes()
        said: dict[str, int] = {CHECKSUM_WARNING: 0, DATABASE_WARNING: 0}
        for offset in range(0, len(intact), 61):
            database.write_bytes(intact)
            flip(database, offset)
            found, stderr = run(CacheOptions())
            assert found == expected, offset
            assert all(set(docs) <= corpus for docs in found.values())
            assert len(stderr) <= 1, (offset, stderr)
            for warning in said:
                said[warning] += any(warning in line for line in stderr)
    finally:
        progress.set_quiet(False)
    assert said[CHECKSUM_WARNING] > 10 and said[DATABASE_WARNING] > 0, said
