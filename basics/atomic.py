"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash or a bad input never leaves a half-written file under the final name, and never
destroys what an earlier run wrote there (ir_datasets' practice). A write that fails for lack of space or
permission raises one :class:`basics.resources.ResourceError` naming the path and what to do, and leaves
no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as error:
        raise write_error(final, error) from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes the file private; outputs should be as readable as any other
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as error:
        if not _is_write_of(error, tmp, final):
            raise
        raise write_error(final, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


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
