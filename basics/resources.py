"""Disk space, permissions and leftovers: the environment faults every writer meets, as one-line errors.

Three tools, each for a failure users meet on shared clusters:

- :func:`write_error` turns the ``OSError`` of a failed write (disk full, quota, file-size limit, read-only
  file system, no permission, a file where a folder should be) into a :class:`ResourceError` that names the
  path and what to do. :mod:`basics.atomic` applies it to every atomic write.
- :func:`ensure_free_space` and :func:`reserve` run *before* a memory-mapped write. Writing a page of a
  sparse memory-mapped file when the disk is full kills the process with SIGBUS (no message, no cleanup);
  reserving the blocks first (``posix_fallocate``) turns that into an ordinary error up front.
- :func:`sweep_stale_temps` removes the hidden ``.NAME.*.tmp`` files and folders (and ``.NAME.old-PID``
  folders of :func:`basics.atomic.replace_dir`) that a killed run left in an index folder, so they do
  not keep the disk full for every retry. It is only safe while holding the folder's write lock
  (:func:`basics.lock.index_lock`, which calls it), because another writer's temporaries look the same.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lyre.basics.errors import LyreError, opt
from lyre.basics.numbers import count, size

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Out of space: the device, the user's quota, or the process's file-size limit (``ulimit -f``)."""
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""A read-only file system, missing permission, or an immutable file or folder."""
SPACE_MARGIN = 1 << 20
"""Free space asked beyond a write's own estimate (:func:`ensure_free_space`): what follows it, the stage's
record and the manifest rewritten beside the old one before the swap. A manifest takes about 150 bytes per
recorded file: 1 MiB covers an index of several thousand files, and asks little of a small one (a 0.1 MB
BM25 index of the bundled sample needs 1.1 MiB free, not 16 MiB)."""
BLOCK_BYTES = 4096
"""The allocation unit of common file systems (ext4, xfs, tmpfs pages): a file takes whole blocks."""


class ResourceError(LyreError):
    """A write failed because of the environment (space, permissions), not because of the input."""


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: where ``statvfs`` can be asked about the file system."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged user may still write on the file system that holds (or will hold) ``path``."""
    stats = os.statvfs(_existing_ancestor(Path(path)))
    return stats.f_bavail * stats.f_frsize


def is_write_failure(error: OSError) -> bool:
    """True for the errors :func:`write_error` explains (space, permission, a file in a folder's place)."""
    return error.errno in DISK_FULL | NOT_WRITABLE | {errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def write_error(path: str | Path, error: OSError, option: str = "out") -> ResourceError:
    """The one-line error for ``error``, raised while writing ``path``.

    Every message names the path and the way out: free space or pick another output for a full disk,
    another output or the folder's permissions for a read-only or forbidden folder. ``option`` is the
    option that named the output (``plot`` for ``lyre compare --plot``).
    """
    path = Path(path)
    reason = error.strerror or str(error)
    if error.errno in DISK_FULL:
        where = _existing_ancestor(path.parent)
        return ResourceError(
            f"{path}: no space left to write it ({reason}; {size(free_bytes(where))} free in "
            f"{where}); free space there, or choose another {opt(option)}"
        )
    if error.errno in NOT_WRITABLE:
        return ResourceError(
            f"{path}: cannot write here ({reason}: the folder is read-only or not yours); "
            f"choose another {opt(option)}, or make the folder writable"
        )
    if error.errno == errno.EISDIR:
        return ResourceError(f"{path}: is a folder, not a file; choose another {opt(option)}")
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((p for p in (path, *path.parents) if p.is_file()), path)
        return ResourceError(
            f"{path}: {blocking} is a file where a folder is needed; choose another {opt(option)}"
        )
    return ResourceError(f"{path}: cannot write it ({reason}); choose another {opt(option)}")


def on_disk(*sizes: int) -> int:
    """What files of these sizes take on disk: each rounded up to whole :data:`BLOCK_BYTES` blocks."""
    return sum(-(-part // BLOCK_BYTES) * BLOCK_BYTES for part in sizes)


def ensure_free_space(path: str | Path, bytes_needed: int) -> None:
    """Refuse a write of ``bytes_needed`` bytes under ``path`` when the file system has not that much free
    (plus :data:`SPACE_MARGIN`). A check, not a reservation: call :func:`reserve` on the file itself when
    other processes may fill the disk between the check and the write."""
    free = free_bytes(path)
    if free < bytes_needed + SPACE_MARGIN:
        where = _existing_ancestor(Path(path))
        raise ResourceError(
            f"{path}: needs {size(bytes_needed + SPACE_MARGIN)} but only {size(free)} is free "
            f"in {where}; free space there, or choose another {opt('out')}"
        )


def reserve(path: str | Path) -> None:
    """Allocate every block of the (sparse) file ``path`` now, so writing it through a memory map can no
    longer fail with SIGBUS when the disk fills; a full disk or a file-size limit raises
    :class:`ResourceError` here instead. Falls back to :func:`ensure_free_space` on file systems that
    cannot preallocate."""
    path = Path(path)
    length = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, length)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            ensure_free_space(path, length)
            return
        raise write_error(path, error) from None
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    """Names of lyre's temporaries: ``.NAME.XXXX.tmp`` (atomic writes, stage folders) and
    ``.NAME.old-PID`` (a folder moved aside by :func:`basics.atomic.replace_dir`)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".old-" in name)


@dataclass(frozen=True)
class Swept:
    """What :func:`sweep_stale_temps` removed."""

    paths: list[Path]
    bytes: int

    def summary(self, folder: Path) -> str:
        return (
            f"{folder}: removed {count(len(self.paths))} temporary file(s) and folder(s) "
            f"({size(self.bytes)}) left by an earlier run that stopped"
        )


def _size_of(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.lstat().st_size


def sweep_stale_temps(folder: str | Path, older_than: float) -> Swept:
    """Remove lyre's temporaries anywhere under ``folder`` last modified before ``older_than`` (a
    ``time.time()`` value: the moment the caller's write lock was taken, so its own temporaries stay).

    Only safe while holding ``folder``'s exclusive write lock: then no other writer can own them.
    """
    folder = Path(folder)
    removed: list[Path] = []
    total = 0
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in [*dirs, *files]:
            path = base / name
            if not is_temp_name(name) or path.lstat().st_mtime >= older_than:
                continue
            taken = _size_of(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            if not path.exists():
                removed.append(path)
                total += taken
        dirs[:] = [d for d in dirs if (base / d).exists()]
    return Swept(sorted(removed), total)
