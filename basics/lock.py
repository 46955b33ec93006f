"""One writer per index folder: advisory locks with the holder named, stale holders taken over.

Two locks live in an index folder, both ``flock`` locks on a small file, so the kernel releases them when
the holder dies however it dies (SIGKILL, OOM kill, node reboot of a local disk): a killed command never
leaves a lock behind that blocks the next one.

``INDEX/.lyre.lock`` — the long lock, held for a whole command (:func:`index_lock`), in one of three modes:

======== ========= ===========================================================================
mode     flock     taken by
======== ========= ===========================================================================
write    exclusive ``lyre ingest``, ``lyre index`` (every stage it builds, ``--overwrite``,
                   ``--verify``), ``lyre encode`` without a job-array slice: anything that
                   replaces, deletes or renames files other commands may be reading
slice    shared    one slice of a job array (``lyre encode``/``lyre index --slice-id I
                   --slices N``): slices write disjoint chunk files, so they run together;
                   a slice that goes on to a later stage calls :meth:`IndexLock.promote` first
read     shared    ``lyre search``, ``lyre rerank``: they read a consistent state, because no
                   writer can start while they hold it (a folder they cannot write is read
                   without a lock: nobody else can write it either, under the same permissions)
======== ========= ===========================================================================

``INDEX/.lyre.manifest.lock`` — the short lock (:func:`manifest_update`), always exclusive and always
waited for: every read-modify-write of ``manifest.json`` (record, clear, invalidate a stage) holds it, so
slices finishing at the same moment never lose each other's updates.

``.NAME.lock`` beside an output file — the output lock (:func:`output_lock`), exclusive, held by a command
from the moment its options are checked until its output (a run and its sidecar, a plot, a settings file)
is published, so two commands writing the same ``--out`` never mix their files: the second is refused
with one line naming the holder, or waits with ``--wait``. The holder records itself in the lock file, and
removes the file when done.

Each holder of the long lock records itself in ``INDEX/.lyre.holders/HOST.PID.json`` (pid, host, command,
start time, and which lock file it holds), so a refused command names who holds the folder. Records of
processes that are gone are stale: the next holder removes them and says that it takes over. Records that
came with a copy of the folder (``cp -r idx/a idx/b`` copies them) name a lock file that is not this
folder's: they never held it, so they are removed without a word and never named. A writer holding the
exclusive lock also sweeps the temporaries a killed run left (:func:`basics.resources.sweep_stale_temps`):
no one else can own them then.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from lyre.basics import progress
from lyre.basics.atomic import write_json_atomic
from lyre.basics.errors import LyreError, opt
from lyre.basics.numbers import count
from lyre.basics.provenance import command_line
from lyre.basics.resources import sweep_stale_temps, write_error

LOCK_NAME = ".lyre.lock"
MANIFEST_LOCK_NAME = ".lyre.manifest.lock"
HOLDERS_DIR = ".lyre.holders"
LockMode = Literal["write", "slice", "read"]
_VERB: dict[str, str] = {"write": "written", "slice": "encoded (job-array slices)", "read": "read"}
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})
"""flock failures of file systems without lock support (some FUSE and old NFS mounts)."""


class LockedError(LyreError):
    """The index folder is held by another command and the caller did not ask to wait."""


@dataclass(frozen=True)
class Holder:
    """Who holds an index folder's long lock, as recorded in its holder file."""

    pid: int
    host: str
    command: str
    since: str
    """Local time the lock was taken, for people (``2024-05-01 14:03:07``)."""
    started: float
    """The same moment as ``time.time()``, for comparisons."""
    mode: str
    lock_file: int
    """The inode of the lock file held (0: none): whether the record is this folder's or a copy's."""

    @classmethod
    def of_this_process(cls, mode: LockMode, lock_file: int = 0) -> Holder:
        now = time.time()
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        return cls(os.getpid(), socket.gethostname(), command_line(), since, now, mode, lock_file)

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        """The holder recorded in ``path``; None when the file is gone or garbled (a half-written record
        of a killed process)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def is_running(self) -> bool | None:
        """Whether the process still runs: known only on its own host (None elsewhere)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, under another user
        return True

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} ({self.command})"


def _record_path(folder: Path, holder: Holder) -> Path:
    return folder / HOLDERS_DIR / f"{holder.host}.{holder.pid}.json"


def _lock_file_identity(folder: Path) -> int:
    """The inode of ``folder``'s lock file (0 when it has none): a copy of the folder has another."""
    try:
        return os.stat(folder / LOCK_NAME).st_ino
    except OSError:
        return 0


def _recorded(folder: Path) -> list[tuple[Path, Holder | None]]:
    """Every holder record in ``folder``, None for one that is garbled or came with a copy of the folder
    (it names another lock file: its process never held this one)."""
    holders_dir = folder / HOLDERS_DIR
    if not holders_dir.is_dir():
        return []
    identity = _lock_file_identity(folder)
    found: list[tuple[Path, Holder | None]] = []
    for path in sorted(holders_dir.glob("*.json")):
        holder = Holder.read(path)
        found.append((path, holder if holder is not None and holder.lock_file == identity else None))
    return found


def _busy_message(folder: Path) -> str:
    """Who holds ``folder``: the earliest live holder (writers first), or the exited process whose
    children still hold the lock (a worker forked before it died inherits the lock)."""
    holders = [h for _, h in _recorded(folder) if h is not None]
    live = sorted(
        (h for h in holders if h.is_running() is not False), key=lambda h: (h.mode != "write", h.started)
    )
    if live:
        first = live[0]
        others = f" (and {count(len(live) - 1)} other process(es))" if len(live) > 1 else ""
        return f"{folder} is being {_VERB.get(first.mode, 'used')} by {first.describe()}{others}"
    if holders:
        first = min(holders, key=lambda h: h.started)
        return (
            f"{folder} is locked by processes that {first.describe()} started before it exited; "
            f"stop them (`lsof {folder / LOCK_NAME}` lists them)"
        )
    return f"{folder} is in use by another lyre process"


class IndexLock:
    """The long lock on one index folder, held by this process (see the module docstring for modes)."""

    def __init__(self, folder: Path, mode: LockMode, fd: int | None) -> None:
        self.folder = folder
        self.mode: LockMode = mode
        self._fd = fd
        self.holder = Holder.of_this_process(mode, self._identity())
        self._depth = 1

    def _identity(self) -> int:
        """The inode of the lock file this lock holds (0: a folder no one can write, held without one)."""
        return os.fstat(self._fd).st_ino if self._fd is not None else 0

    def _take(self, wait: bool) -> None:
        """flock in this lock's mode: at once, or (``wait``) after one status line naming the holder."""
        if self._fd is None:
            return
        operation = fcntl.LOCK_SH if self.mode in ("read", "slice") else fcntl.LOCK_EX
        try:
            fcntl.flock(self._fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            message = _busy_message(self.folder)
            if not wait:
                raise LockedError(f"{message}; wait for it, or pass {opt('wait')}") from None
            progress.say(f"{message}; waiting until it finishes")
            fcntl.flock(self._fd, operation)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            progress.say(
                f"{self.folder}: this file system does not support locks; "
                "make sure no other lyre command writes this index at the same time"
            )
        self.holder = Holder.of_this_process(self.mode, self._identity())
        self._after_taking()

    def _after_taking(self) -> None:
        """Remove records of holders that are gone (all others, once exclusive), sweep temporaries when
        exclusive, and record this process as the holder."""
        exclusive = self.mode == "write"
        for path, holder in _recorded(self.folder):
            if holder is not None and (holder.pid, holder.host) == (self.holder.pid, self.holder.host):
                continue
            if holder is not None and not exclusive and holder.is_running() is not False:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
            if holder is not None and holder.mode != "read":
                progress.say(
                    f"{self.folder}: taking over the lock of {holder.describe()}, "
                    "which stopped without releasing it"
                )
        if exclusive:
            swept = sweep_stale_temps(self.folder, older_than=self.holder.started)
            if swept.paths:
                progress.say(swept.summary(self.folder))
        self._write_record()

    def _write_record(self) -> None:
        try:
            write_json_atomic(_record_path(self.folder, self.holder), asdict(self.holder))
        except LyreError:
            if self.mode != "read":
                raise  # a reader of a folder it cannot write simply goes unrecorded

    def promote(self) -> None:
        """Turn a slice lock into the write lock (a slice that found every chunk encoded goes on to build
        the dense index, which replaces files), waiting for the other holders to finish. It always waits:
        flock drops the shared lock before taking the exclusive one, so a refusal would leave none."""
        if self.mode == "write":
            return
        if self.mode == "read":
            raise ValueError(f"{self.folder}: a read lock cannot become a write lock; take a write lock")
        self.mode = "write"
        self._take(wait=True)

    def release(self) -> None:
        """Drop the record, then the lock (in that order: a recorded holder always holds the lock)."""
        with contextlib.suppress(OSError):
            _record_path(self.folder, self.holder).unlink()
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


_held: dict[Path, IndexLock] = {}
_held_guard = threading.Lock()


def _open_lock_file(folder: Path, mode: LockMode) -> int | None:
    """The descriptor to flock. Writers create the folder and the file; a reader that cannot create the
    file opens it read-only, or goes without a lock in a folder no one can write."""
    path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    if mode != "read":
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return os.open(path, flags, 0o666)
        except OSError as error:
            raise write_error(folder, error) from None
    try:
        return os.open(path, flags, 0o666)
    except OSError:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None


@contextlib.contextmanager
def index_lock(folder: str | Path, mode: LockMode = "write", *, wait: bool = False) -> Iterator[IndexLock]:
    """Hold ``folder``'s long lock in ``mode`` for the block.

    Refused at once with one line naming the holder (:class:`LockedError`), or, with ``wait``, after a
    status line, when the holder is done. Reentrant within a process: a command that already holds the
    write lock (the stage runner) may call functions that take it again (ingest).
    """
    folder = Path(folder)
    key = Path(os.path.abspath(folder))
    with _held_guard:
        held = _held.get(key)
    if held is not None:
        if held.mode != "write" and held.mode != mode:
            raise ValueError(f"{folder}: this process holds a {held.mode} lock and asked for a {mode} lock")
        held._depth += 1
        try:
            yield held
        finally:
            held._depth -= 1
        return
    if mode == "read" and not folder.is_dir():
        raise LyreError(f"{folder}: no such index folder; check the path or build it with `lyre index`")
    lock = IndexLock(folder, mode, _open_lock_file(folder, mode))
    try:
        lock._take(wait)
    except BaseException:
        lock.release()
        raise
    with _held_guard:
        _held[key] = lock
    try:
        yield lock
    finally:
        with _held_guard:
            _held.pop(key, None)
        lock.release()


_manifest_guard = threading.RLock()
_manifest_depth: dict[Path, int] = {}


@contextlib.contextmanager
def manifest_update(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s short manifest lock for one read-modify-write of ``manifest.json``.

    Always waits (updates take milliseconds). Reentrant within a process (``invalidate`` clears several
    stages), and threads of one process are serialised too, since flock alone would not separate them.
    """
    folder = Path(folder)
    key = Path(os.path.abspath(folder))
    with _manifest_guard:
        if _manifest_depth.get(key):
            _manifest_depth[key] += 1
            try:
                yield
            finally:
                _manifest_depth[key] -= 1
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / MANIFEST_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise write_error(folder, error) from None
        try:
            with contextlib.suppress(OSError):  # no lock support: the write lock still guards writers
                fcntl.flock(fd, fcntl.LOCK_EX)
            _manifest_depth[key] = 1
            try:
                yield
            finally:
                _manifest_depth.pop(key, None)
        finally:
            os.close(fd)


_outputs_held: dict[Path, int] = {}
_outputs_guard = threading.Lock()


def output_lock_path(path: Path) -> Path:
    """The lock file of output ``path``: ``.NAME.lock`` beside it (the output itself is replaced by a
    rename, so it cannot carry a lock)."""
    return path.with_name(f".{path.name}.lock")


def _created_folders(path: Path) -> Path | None:
    """The first folder above ``path`` that does not exist yet (None: all exist), so a command that fails
    leaves no empty folder it made behind."""
    missing = None
    for folder in Path(os.path.abspath(path)).parents:
        if folder.exists():
            break
        missing = folder
    return missing


def _open_output_lock(lock_path: Path, path: Path, option: str) -> int:
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise write_error(path, error, option) from None


def _is_current(fd: int, lock_path: Path) -> bool:
    """Whether ``fd`` is still the file at ``lock_path`` (the previous holder removes it when done: a
    lock taken on the removed file guards nothing)."""
    try:
        named = os.stat(lock_path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


HOLDER_RECORD_WAIT_S = 1.0
"""How long a refused writer waits for the holder to record itself: the holder writes its record just
after it takes the lock, and a refusal should name it rather than "another lyre process"."""


def _output_holder(lock_path: Path) -> Holder | None:
    """The holder recorded in ``lock_path``, polled briefly while it is still being written."""
    deadline = time.monotonic() + HOLDER_RECORD_WAIT_S
    while (holder := Holder.read(lock_path)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return holder


def _take_output_lock(path: Path, lock_path: Path, option: str, wait: bool) -> int:
    """The descriptor of ``lock_path``, flocked exclusively: at once, or (``wait``) after one status line
    naming the holder; refused with :class:`LockedError` otherwise."""
    while True:
        fd = _open_output_lock(lock_path, path, option)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _output_holder(lock_path)
            who = holder.describe() if holder is not None else "another lyre process"
            message = f"{opt(option)} {path}: is being written by {who}"
            if not wait:
                os.close(fd)
                raise LockedError(f"{message}; wait for it, or pass {opt('wait')}") from None
            progress.say(f"{message}; waiting until it finishes")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            progress.say(
                f"{path}: this file system does not support locks; "
                "make sure no other lyre command writes the same output at the same time"
            )
            return fd
        if _is_current(fd, lock_path):
            return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(path: str | Path, *, wait: bool = False, option: str = "out") -> Iterator[None]:
    """Hold the lock of output file ``path`` for the block (see the module docstring).

    Reentrant within a process: the command holds it for its whole work, and the writer that publishes
    the files takes it again. Creates the output's folder (a read-only or missing place is one line
    naming ``option`` before any work), and removes the folders it created when nothing was written."""
    path = Path(path)
    key = Path(os.path.abspath(path))
    with _outputs_guard:
        if key in _outputs_held:
            _outputs_held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _outputs_guard:
                _outputs_held[key] -= 1
        return
    lock_path = output_lock_path(key)
    created = _created_folders(key)
    fd = _take_output_lock(path, lock_path, option, wait)
    try:
        holder = Holder.of_this_process("write")
        with contextlib.suppress(OSError):  # the record only names the holder in others' messages
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(holder)).encode("utf-8"), 0)
        with _outputs_guard:
            _outputs_held[key] = 1
        yield
    finally:
        with _outputs_guard:
            _outputs_held.pop(key, None)
        with contextlib.suppress(OSError):
            if _is_current(fd, lock_path):
                lock_path.unlink()  # still holding it: no one else can be using this file
        os.close(fd)
        if created is not None and not key.exists():
            _remove_empty(key.parent, created)


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    for current in (folder, *folder.parents):
        try:
            current.rmdir()
        except OSError:
            return
        if current == top:
            return
