"""The cache database of an index folder: entries that carry their own checksum, bounded, shared safely.

``INDEX/cache/cache.sqlite`` holds values under content keys; what a key hashes (model, recipe, stages,
settings, texts) is decided by the callers (:mod:`retrieval.cache`), this module only stores them. Every
entry carries a checksum of its key and value, checked on every read: an entry damaged on disk (a flipped
bit, a page written halfway) is dropped and handed back as missing, so the caller computes it again, and the
command says so once. A search never trusts bytes it cannot check: before checksums, one flipped byte in a
cached list put document ids into a run that are not in the corpus.

A database SQLite itself finds damaged (a broken header or page structure) turns the cache off for the
rest of the command, said once; deleting it there is not safe while other searches may hold it open.
``lyre index --verify`` (:func:`verify_cache`), which holds the index's write lock, checks every entry's
checksum, drops the bad ones, and starts a damaged database again.

SQLite in WAL mode with short transactions (a busy timeout, never a transaction across model work):
concurrent commands on one index read and write it safely. It is bounded: past ``cache_limit_mb`` of
values, the least recently used entries are dropped. An index folder where the cache cannot be written
(read-only, full disk) searches without it, saying so once.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.declared import option
from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.indexes.integrity import repair_command, repair_hint
from lyre.indexes.manifest import load_manifest

CACHE_DIR = "cache"
DATABASE = "cache.sqlite"
MIB = 1 << 20
BUSY_TIMEOUT_S = 60.0
"""How long a command waits for another command's write transaction (each lasts milliseconds)."""
EVICT_TO = 0.9
"""Eviction frees down to this fraction of the limit, so a full cache does not evict on every write."""
SQL_CHUNK = 500
"""Keys per ``IN (...)`` statement: below every SQLite build's variable limit."""
SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the entries' layout (2: with checksums). A database of another version is
emptied when opened: a cache holds nothing that cannot be computed again. Bump it when a value's
encoding changes."""
CHECKSUM_BYTES = 16
DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""SQLite's own verdicts on a damaged file (primary codes; extended codes carry them in the low byte)."""
STORE_ERRORS = (sqlite3.Error, UnicodeDecodeError)
"""What the database can raise: SQLite's errors, and the decoding error Python raises where SQLite's
message quotes a damaged name from the file (``malformed database schema (...)`` with a byte that is not
UTF-8)."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    "key TEXT PRIMARY KEY, size INTEGER NOT NULL, used REAL NOT NULL, checksum BLOB NOT NULL, "
    "value BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_used ON entries (used, size)",
)
"""The values last, so reading a row's size and use never touches its overflow pages."""


@dataclass(frozen=True)
class CacheOptions:
    """Whether a search reuses (and keeps) the work of earlier searches of the same index."""

    no_cache: bool = option(
        False,
        "Neither reuse nor keep query vectors, first-stage lists and reranker scores in INDEX/cache/ "
        "(by default a command reuses what earlier commands on the index computed).",
    )
    cache_limit_mb: int = option(
        2048, "Size limit of INDEX/cache/ in MiB; the least recently used entries go beyond it.", minimum=1
    )


def cache_path(index_dir: Path) -> Path:
    """Where the cache database of ``index_dir`` lies."""
    return index_dir / CACHE_DIR / DATABASE


def entry_checksum(key: bytes, value: bytes) -> bytes:
    """What an entry carries to prove it is whole: a hash of its key (length-prefixed) and value. The
    key is in it so that a row found for another key (a damaged index page) fails the check too."""
    digest = hashlib.sha256(len(key).to_bytes(8, "little"))
    digest.update(key)
    digest.update(value)
    return digest.digest()[:CHECKSUM_BYTES]


def is_damage(error: BaseException) -> bool:
    """Whether ``error`` is SQLite saying the file is damaged (not full, locked or read-only)."""
    if isinstance(error, UnicodeDecodeError):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in DAMAGE_CODES


class SearchCache:
    """The cache database of one index folder; open it with :meth:`open`.

    Any SQLite error after opening (a full disk, a damaged file) turns the cache off for the rest of the
    command with one line: the search goes on, computing what it would have read."""

    def __init__(self, index_dir: Path, connection: sqlite3.Connection, limit_bytes: int) -> None:
        self.index_dir = index_dir
        self.path = cache_path(index_dir)
        self.connection: sqlite3.Connection | None = connection
        self.limit_bytes = limit_bytes
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self.damaged = 0
        """Entries found damaged (and dropped) by this command."""

    @classmethod
    def open(cls, index_dir: Path, options: CacheOptions) -> SearchCache | None:
        """The cache of ``index_dir``, created on first use; None when turned off, not writable or damaged."""
        if options.no_cache:
            return None
        path = cache_path(index_dir)
        try:
            path.parent.mkdir(exist_ok=True)
            connection = _connect(path)
            try:
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table only
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                with _transaction(connection):
                    (version,) = connection.execute("PRAGMA user_version").fetchone()
                    if version != SCHEMA_VERSION:  # another layout (an older lyre): start again
                        connection.execute("DROP TABLE IF EXISTS entries")
                        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    for statement in _SCHEMA:
                        connection.execute(statement)
            except BaseException:
                connection.close()
                raise
        except (*STORE_ERRORS, OSError) as error:
            if is_damage(error):
                say_damaged_database(index_dir, error)
            else:
                progress.say(f"cache off: {path} cannot be written ({_reason(error)}); searching without it")
            return None
        return cls(index_dir, connection, options.cache_limit_mb * MIB)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _failed(self, error: Exception) -> None:
        if is_damage(error):
            if not self.damaged:  # else damage was said already: one warning per command
                say_damaged_database(self.index_dir, error)
        else:
            progress.say(f"cache off: {self.path} failed ({_reason(error)}); going on without it")
        self.close()

    def get(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The values stored under ``keys`` whose checksum holds (absent and damaged keys left out: a
        damaged entry is dropped); each hit counts as a use."""
        if self.connection is None or not keys:
            return {}
        found: dict[str, bytes] = {}
        damaged: list[int] = []
        unique = list(dict.fromkeys(keys))
        try:
            for chunk in _chunks(unique):
                asked = {key.encode("utf-8"): key for key in chunk}
                marks = ",".join("?" * len(chunk))
                rows = self.connection.execute(
                    f"SELECT rowid, key, checksum, value FROM entries WHERE key IN ({marks})", chunk
                )
                for rowid, key, checksum, value in rows:
                    if key in asked and _intact(key, checksum, value):
                        found[asked[key]] = value
                    else:  # damaged, or a row of another key (found through a damaged index page)
                        damaged.append(rowid)
            if damaged:
                self._drop_rows(damaged)
            if found:
                now = time.time()
                with _transaction(self.connection):
                    for chunk in _chunks(list(found)):
                        marks = ",".join("?" * len(chunk))
                        self.connection.execute(
                            f"UPDATE entries SET used = ? WHERE key IN ({marks})", [now, *chunk]
                        )
        except STORE_ERRORS as error:
            self._failed(error)
            return {}
        return found

    def discard(self, keys: Sequence[str]) -> None:
        """Drop the entries under ``keys``, whose values did not decode (said once, as damage)."""
        if self.connection is None or not keys:
            return
        self._note_damage(len(keys))
        try:
            with _transaction(self.connection):
                for chunk in _chunks(list(keys)):
                    self.connection.execute(
                        f"DELETE FROM entries WHERE key IN ({','.join('?' * len(chunk))})", chunk
                    )
        except STORE_ERRORS as error:
            self._failed(error)

    def _drop_rows(self, rowids: list[int]) -> None:
        assert self.connection is not None
        self._note_damage(len(rowids))
        with _transaction(self.connection):
            self.connection.executemany("DELETE FROM entries WHERE rowid = ?", [(rowid,) for rowid in rowids])

    def _note_damage(self, entries: int) -> None:
        """Count damaged entries; the first of a command is said (the run is unaffected: they are computed
        again), so a disk that goes bad does not go unnoticed."""
        if not self.damaged:
            warn(
                f"{self.path}: a cached entry failed its checksum; dropped and computed again "
                f"(`{_repair_command(self.index_dir)}` checks every entry)"
            )
        self.damaged += entries

    def put(self, items: dict[str, bytes]) -> None:
        """Store ``items`` (key -> value) with their checksums in one short transaction, then keep the
        cache under its limit."""
        if self.connection is None or not items:
            return
        now = time.time()
        rows = [
            (key, len(value), now, entry_checksum(key.encode("utf-8"), value), value)
            for key, value in items.items()
        ]
        try:
            with _transaction(self.connection):
                self.connection.executemany(
                    "INSERT OR REPLACE INTO entries (key, size, used, checksum, value) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            self._evict()
        except STORE_ERRORS as error:
            self._failed(error)

    def _evict(self) -> None:
        """Past the limit, drop the least recently used entries down to ``EVICT_TO`` of it."""
        assert self.connection is not None
        with _transaction(self.connection):
            (total,) = self.connection.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
            if total <= self.limit_bytes:
                return
            goal = total - int(self.limit_bytes * EVICT_TO)
            freed, oldest = 0, []
            for rowid, size in self.connection.execute("SELECT rowid, size FROM entries ORDER BY used, key"):
                if freed >= goal:
                    break
                oldest.append((rowid,))
                freed += size
            self.connection.executemany("DELETE FROM entries WHERE rowid = ?", oldest)
        self.connection.execute("PRAGMA incremental_vacuum")

    def count(self, kind: str, hits: int, misses: int) -> None:
        self.hits[kind] = self.hits.get(kind, 0) + hits
        self.misses[kind] = self.misses.get(kind, 0) + misses

    def summary(self) -> dict[str, Any]:
        """What a run's sidecar records of the cache: where it is, what was reused, what was damaged."""
        return {
            "path": str(self.path),
            "hits": dict(self.hits),
            "misses": dict(self.misses),
            "damaged": self.damaged,
        }


def verify_cache(index_dir: Path) -> None:
    """``lyre index --verify``: check every entry's checksum and drop the bad ones, or start a database
    SQLite finds damaged again; one status line either way. The caller holds the index's write lock, so
    no search has the database open."""
    path = cache_path(index_dir)
    if not path.exists():
        return
    total = bad = 0
    try:
        connection = _connect(path)
        try:
            problem = _sqlite_problem(connection)
            if problem is None:
                total, bad = _drop_damaged_entries(connection)
        finally:
            connection.close()
    except STORE_ERRORS as error:
        if not is_damage(error):
            progress.say(f"verify: cache {path} could not be checked ({_reason(error)})")
            return
        problem = _reason(error)
    if problem is not None:
        for damaged in (path, *_companions(path)):
            damaged.unlink(missing_ok=True)
        progress.say(f"verify: cache {path} was damaged ({problem}); removed, searches fill it again")
    elif bad:
        progress.say(
            f"verify: {count(bad)} of {count(total, 'cache entries')} in {path} failed their checksum; "
            "dropped"
        )
    else:
        progress.say(f"verify: all {count(total, 'cache entries')} in {path} intact (checksums)")


def _sqlite_problem(connection: sqlite3.Connection) -> str | None:
    """SQLite's own check of the file's structure (every page, not the values): None when sound."""
    verdict = [row[0] for row in connection.execute("PRAGMA quick_check")]
    if verdict == [b"ok"]:
        return None
    return f"database disk image is malformed: {verdict[0].decode('utf-8', 'replace')}"


def _drop_damaged_entries(connection: sqlite3.Connection) -> tuple[int, int]:
    """(entries, damaged entries dropped): every entry's checksum checked."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version != SCHEMA_VERSION:
        return 0, 0  # another layout: the next search empties it
    total, bad = 0, []
    for rowid, key, checksum, value in connection.execute("SELECT rowid, key, checksum, value FROM entries"):
        total += 1
        if not _intact(key, checksum, value):
            bad.append((rowid,))
    if bad:
        with _transaction(connection):
            connection.executemany("DELETE FROM entries WHERE rowid = ?", bad)
    return total, len(bad)


def _intact(key: Any, checksum: Any, value: Any) -> bool:
    """Whether a row holds the checksum of its key and value (a damaged row may come back with another
    type in any column)."""
    return (
        isinstance(key, bytes)
        and isinstance(value, bytes)
        and isinstance(checksum, bytes)
        and checksum == entry_checksum(key, value)
    )


def _connect(path: Path) -> sqlite3.Connection:
    """A connection that hands text back as bytes: a damaged key must fail its checksum, not raise a
    decoding error that would turn the whole cache off."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    connection.text_factory = bytes
    return connection


def _companions(path: Path) -> tuple[Path, Path]:
    """SQLite's write-ahead log and shared-memory index beside ``path``: removed with it, or a new database
    at the same path would read the old one's log."""
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def say_damaged_database(index_dir: Path, error: BaseException) -> None:
    """The one line for a database SQLite finds damaged: the command goes on without the cache."""
    warn(
        f"{cache_path(index_dir)}: the cache database is damaged ({_reason(error)}); searching without it "
        f"(`{_repair_command(index_dir)}` starts it again)"
    )


def warn(message: str) -> None:
    """A ``warning:`` line on stderr, also under ``--quiet``: the output is right, but something the user
    should know about happened (as ``lyre eval`` warns). Through tqdm, so it does not break a bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _repair_command(index_dir: Path) -> str:
    """``lyre index ... --verify`` with the index's recorded corpus (and model) where the manifest says."""
    try:
        return repair_command(index_dir, repair_hint(load_manifest(index_dir).stages))
    except (LyreError, OSError):
        return repair_command(index_dir)


def _reason(error: BaseException) -> str:
    """SQLite's message (one that did not decode, as far as it does)."""
    if isinstance(error, UnicodeDecodeError) and isinstance(error.object, bytes):
        return error.object.decode("utf-8", "replace")
    return str(error) or type(error).__name__


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), SQL_CHUNK):
        yield keys[start : start + SQL_CHUNK]


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error): the write lock is taken at the start,
    so two writers queue on the busy timeout instead of failing halfway."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.connection.execute("COMMIT")
        elif self.connection.in_transaction:
            self.connection.execute("ROLLBACK")
