"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash or a bad input never leaves a half-written file under the final name, and never
destroys what an earlier run wrote there (ir_datasets' practice). A write that fails for lack of space or
permission raises one :class:`basics.resources.ResourceError` naming the path, the option that named it
and what to do, and leaves no temporary file behind. :func:`atomic_paths` writes several files (a run and
its sidecar) and renames them only once all are written; commands reach it through
:mod:`basics.outputs`, which also locks the output path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lyre.basics.resources import DISK_FULL, is_write_failure, write_error


def temp_dir_beside(final: Path) -> Path:
    """A new hidden temporary folder beside ``final`` (``.NAME.xxxx.tmp``), as readable as any folder the
    user makes (mkdtemp makes it private, and renaming it onto ``final`` would keep that); a failure to
    create it is one line naming ``final``."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as error:
        raise write_error(final, error) from None
    umask = os.umask(0)
    os.umask(umask)
    temp.chmod(0o777 & ~umask)
    return temp


def _temp_file_beside(final: Path, option: str) -> Path:
    """A new hidden temporary file beside ``final`` (``.NAME.xxxx.tmp``), as readable as any file the user
    makes (mkstemp makes it private, and the rename onto ``final`` would keep that)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as error:
        raise write_error(final, error, option) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    Path(name).chmod(0o666 & ~umask)
    return Path(name)


@contextlib.contextmanager
def atomic_paths(finals: Sequence[str | Path], option: str = "out") -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``finals``; rename them onto ``finals``, in order, only if
    the block succeeds (a failure leaves every final path as it was). ``option`` names the output in a
    write error. The renames take microseconds; a process killed between two of them leaves the first
    file new and the next old, which is why a run's sidecar records the run's SHA-256."""
    paths = [Path(final) for final in finals]
    temps: list[Path] = []
    try:
        for final in paths:
            temps.append(_temp_file_beside(final, option))
        yield temps
        for tmp, final in zip(temps, paths, strict=True):
            os.replace(tmp, final)
    except OSError as error:
        failed = next((f for t, f in zip(temps, paths, strict=False) if _is_write_of(error, t, f)), None)
        if failed is None:
            raise
        raise write_error(failed, error, option) from None
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds."""
    with atomic_paths([final]) as (tmp,):
        yield tmp


def _is_write_of(error: OSError, tmp: Path, final: Path) -> bool:
    """Is ``error`` a failure to write ``final`` (through ``tmp``)? Space errors always are (a write on an
    open file names no path); other errors only when they name the temporary or the final path, so an
    error reading some input inside the block is not reported as a write failure."""
    if error.errno in DISK_FULL:
        return True
    named = {str(name) for name in (error.filename, error.filename2) if name is not None}
    ours = {str(tmp), str(final)}
    return is_write_failure(error) and any(
        name in ours or name.startswith(str(tmp) + os.sep) for name in named
    )


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj: Any) -> str:
    """How lyre writes JSON records: indented, keys in their order, non-ASCII kept, a final newline."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json_text(obj))


def replace_dir(new: str | Path, final: str | Path) -> None:
    """Put the finished folder ``new`` at ``final``; an older folder there is moved aside first and
    deleted only after the rename, so ``final`` is never a half-written folder."""
    new, final = Path(new), Path(final)
    old = None
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(new, final)
    except OSError as error:
        if old is not None and not final.exists():  # put the previous folder back: nothing changes
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise write_error(final, error) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
