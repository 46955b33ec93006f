"""Atomic writes under faults: a full disk (the process file-size limit), read-only and forbidden folders,
a file where a folder should be; free-space checks, block reservation and the stale-temp sweep."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lyre.basics.atomic import atomic_path, replace_dir, temp_dir_beside, write_text_atomic
from lyre.basics.numbers import size
from lyre.basics.resources import (
    SPACE_MARGIN,
    ResourceError,
    ensure_free_space,
    free_bytes,
    reserve,
    sweep_stale_temps,
)

REPOSITORY = Path(__file__).resolve().parents[1]
LIMIT = 64 * 1024
UNDER_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so an oversized write fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from lyre.basics.errors import LyreError
try:
{body}
except LyreError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


def _run_limited(
    body: str, *args: str | Path, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (indented code) in a fresh interpreter whose files may not grow beyond ``LIMIT``."""
    code = UNDER_LIMIT.format(limit=LIMIT, body=body)
    return subprocess.run(
        [*(prefix or []), sys.executable, "-c", code, *map(str, args)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".")]


def test_disk_full_during_an_atomic_write_is_one_line_and_changes_nothing(tmp_path):
    target = tmp_path / "out" / "run.txt"
    target.parent.mkdir()
    target.write_text("the earlier run\n")
    body = (
        "    from lyre.basics.atomic import write_text_atomic\n"
        "    write_text_atomic(sys.argv[1], 'x' * 10**6)"
    )
    result = _run_limited(body, target)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message
    assert message.startswith(f"{target}: no space left to write it (File too large; ")
    assert message.endswith(f"free in {target.parent}); free space there, or choose another out")
    assert target.read_text() == "the earlier run\n"  # byte-identical
    assert _temporaries(tmp_path) == []  # no temporary left to keep the disk full


def test_disk_full_while_writing_a_run_keeps_the_earlier_run(tmp_path):
    run = tmp_path / "bm25.run"
    run.write_text("q1 Q0 d1 1 1.0 earlier\n")
    body = (
        "    from lyre.formats.runs import write_run\n"
        "    run = {f'q{i}': {f'doc{j}': float(j) for j in range(100)} for i in range(100)}\n"
        "    write_run(sys.argv[1], run, 'bm25', {})"
    )
    result = _run_limited(body, run)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{run}: no space left to write it (File too large")
    assert run.read_text() == "q1 Q0 d1 1 1.0 earlier\n"
    assert _temporaries(tmp_path) == []


SMALL_DISK = """
import signal, sys
import numpy as np
from lyre.basics.errors import LyreError
from lyre.basics.resources import reserve
data = np.lib.format.open_memmap(sys.argv[1], mode="w+", dtype=np.float32, shape=(1 << 20,))  # 4 MiB
try:
    if sys.argv[2] == "reserve":
        reserve(sys.argv[1])
    data[:] = 1.0
except LyreError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


def _on_small_disk(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``SMALL_DISK`` with a 1 MiB tmpfs mounted on ``tmp_path/disk``, in a private mount namespace
    (``unshare -rm``), so the mount vanishes with the process and needs no privilege."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no way to mount a small disk")
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    script = 'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"'
    command = ["unshare", "-rm", "sh", "-c", script, "sh", str(disk)]
    result = subprocess.run(
        [*command, sys.executable, "-c", SMALL_DISK, str(disk / "data.npy"), *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ("mount" in result.stderr and "ermission" in result.stderr) or "unshare failed" in result.stderr:
        pytest.skip(f"this system does not allow a private tmpfs mount: {result.stderr.strip()}")
    return result


def test_reserve_turns_a_sigbus_on_a_full_disk_into_an_error(tmp_path):
    unreserved = _on_small_disk(tmp_path, "write")
    assert unreserved.returncode == -signal.SIGBUS  # the failure reserve exists for: death without a word
    reserved = _on_small_disk(tmp_path, "reserve")
    assert reserved.returncode == 2, reserved.stderr
    disk = tmp_path / "disk"
    assert reserved.stderr.strip().startswith(
        f"{disk / 'data.npy'}: no space left to write it (No space left"
    )
    assert reserved.stderr.strip().endswith(f"free in {disk}); free space there, or choose another out")


def test_reserve_allocates_every_block_of_a_sparse_file(tmp_path):
    sparse = tmp_path / "data.npy"
    with open(sparse, "wb") as handle:
        handle.truncate(8 << 20)  # what np.lib.format.open_memmap makes: no block allocated yet
    assert sparse.stat().st_blocks == 0
    reserve(sparse)
    assert sparse.stat().st_blocks * 512 >= 8 << 20  # every block allocated: mapped writes cannot fail


def test_ensure_free_space_names_the_need_and_what_is_free(tmp_path):
    ensure_free_space(tmp_path / "new" / "file", 1024)  # a path that does not exist yet is fine
    free = free_bytes(tmp_path)
    with pytest.raises(ResourceError) as error:
        ensure_free_space(tmp_path / "bm25", free)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'bm25'}: needs {size(free + SPACE_MARGIN)} but only ")
    assert message.endswith(f" is free in {tmp_path}; free space there, or choose another out")
    assert error.value.options() == ["out"]


WITHOUT_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
"""Run as root without the capabilities that let root write any folder, so permissions apply to it."""


def test_a_folder_without_write_permission_is_one_line(tmp_path):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: folder permissions cannot stop root's writes")
    read_only = tmp_path / "results"
    read_only.mkdir()
    read_only.chmod(0o555)
    body = "    from lyre.basics.atomic import write_text_atomic\n    write_text_atomic(sys.argv[1], 'run')"
    prefix = WITHOUT_OVERRIDE if os.geteuid() == 0 else []
    result = _run_limited(body, read_only / "bm25.run", prefix=prefix)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"{read_only / 'bm25.run'}: cannot write here (Permission denied: the folder is read-only or not "
        "yours); choose another out, or make the folder writable"
    )
    assert list(read_only.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="needs root and chattr")
def test_an_immutable_folder_stops_even_root(tmp_path):
    """The root user's read-only folder: ``chattr +i`` refuses every change (EPERM), whoever asks."""
    frozen = tmp_path / "index"
    frozen.mkdir()
    (frozen / "manifest.json").write_text("{}")
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode != 0:
        pytest.skip("the file system does not support immutable folders")
    try:
        with pytest.raises(ResourceError) as error:
            write_text_atomic(frozen / "manifest.json", '{"format": 1}')
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert str(error.value) == (
        f"{frozen / 'manifest.json'}: cannot write here (Operation not permitted: the folder is read-only "
        "or not yours); choose another out, or make the folder writable"
    )
    assert (frozen / "manifest.json").read_text() == "{}"


def test_a_file_where_a_folder_should_be_and_a_folder_where_a_file_should_be(tmp_path):
    (tmp_path / "runs").write_text("a file")
    with pytest.raises(ResourceError) as error:
        write_text_atomic(tmp_path / "runs" / "bm25.run", "x")
    assert str(error.value) == (
        f"{tmp_path / 'runs' / 'bm25.run'}: {tmp_path / 'runs'} is a file where a folder is needed; "
        "choose another out"
    )
    (tmp_path / "out").mkdir()
    with pytest.raises(ResourceError) as error:
        write_text_atomic(tmp_path / "out", "x")
    assert str(error.value) == f"{tmp_path / 'out'}: is a folder, not a file; choose another out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]


def test_an_input_error_inside_the_block_is_not_reported_as_a_write_failure(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text((tmp_path / "missing-input.txt").read_text())
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_swaps_folders_and_leaves_nothing_aside(tmp_path):
    (tmp_path / "bm25").mkdir()
    (tmp_path / "bm25" / "old").write_text("old")
    (tmp_path / ".bm25.new.tmp").mkdir()
    (tmp_path / ".bm25.new.tmp" / "new").write_text("new")
    replace_dir(tmp_path / ".bm25.new.tmp", tmp_path / "bm25")
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == ["bm25", "bm25/new"]


def test_sweep_removes_only_temporaries_older_than_the_lock(tmp_path):
    old_dir = tmp_path / ".bm25.a1.tmp"
    old_dir.mkdir()
    (old_dir / "data.npy").write_bytes(b"x" * 2048)
    old_file = tmp_path / "dense" / ".shard-000001.faiss.b2.tmp"
    old_file.parent.mkdir()
    old_file.write_bytes(b"y" * 1024)
    aside = tmp_path / ".docstore.old-99"
    aside.mkdir()
    past = time.time() - 3600
    for path in (old_dir, old_file, aside):
        os.utime(path, (past, past))
    fresh = tmp_path / ".manifest.json.c3.tmp"  # written after the lock was taken: the caller's own
    fresh.write_text("{}")
    kept = [tmp_path / "dense" / "shard-000000.faiss", tmp_path / ".lyre.lock", tmp_path / "notes.tmp"]
    for path in kept:
        path.write_text("kept")
    swept = sweep_stale_temps(tmp_path, older_than=time.time() - 60)
    assert swept.paths == sorted([old_dir, old_file, aside])
    assert swept.bytes == 3072
    assert swept.summary(tmp_path) == (
        f"{tmp_path}: removed 3 temporary file(s) and folder(s) (3.0 KiB) left by an earlier run that stopped"
    )
    assert fresh.exists() and all(p.exists() for p in kept)
    assert not any(p.exists() for p in (old_dir, old_file, aside))


def test_a_temp_folder_beside_a_final_one_is_as_readable_as_the_umask_allows(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        temp = temp_dir_beside(tmp_path / "bm25")
    finally:
        os.umask(previous)
    assert temp.parent == tmp_path and temp.name.startswith(".bm25.") and temp.name.endswith(".tmp")
    assert stat.S_IMODE(temp.stat().st_mode) == 0o755  # mkdtemp alone gives 0o700: others could not read
