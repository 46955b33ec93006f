"""The index folder locks with real concurrent processes: refusal naming the holder, waiting, killed and
exited holders, concurrent job-array slices, serialised manifest updates, and the temp sweep; and the
lock of one output file (a run, a plot): reentrant, gone when released, never left blocking by a kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError
from lyre.basics.lock import HOLDERS_DIR, LockedError, index_lock, output_lock, output_lock_path
from lyre.basics.resources import ResourceError

REPOSITORY = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from pathlib import Path
from lyre.basics.lock import index_lock
folder, mode, ready, release = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
with index_lock(folder, mode):
    ready.write_text("held")
    while not release.exists():
        time.sleep(0.02)
"""


class Holder:
    """A separate process holding ``folder``'s lock until :meth:`stop` (or a kill)."""

    def __init__(self, folder: Path, mode: str, tag: str) -> None:
        self.ready = folder.parent / f"{tag}.ready"
        self.release = folder.parent / f"{tag}.release"
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder), mode, str(self.ready), str(self.release)],
            cwd=REPOSITORY,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            assert time.monotonic() < deadline, "holder did not take the lock"
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.release.write_text("go")
        assert self.process.wait(timeout=30) == 0


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "index").mkdir()
    yield tmp_path / "index"


def test_second_writer_is_refused_with_one_line_naming_the_holder(folder):
    holder = Holder(folder, "write", "a")
    try:
        with pytest.raises(LockedError) as error, index_lock(folder, "write"):
            pass
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"{folder} is being written by pid {holder.pid} on {socket.gethostname()}")
        assert " since 20" in message and "-c " in message  # the time taken and the holder's command
        assert message.endswith("wait for it, or pass wait")
        assert error.value.options() == ["wait"]
    finally:
        holder.stop()
    with index_lock(folder, "write") as lock:  # released: free again
        assert lock.holder.pid == os.getpid()


def test_readers_and_writers_exclude_each_other(folder):
    reader = Holder(folder, "read", "r")
    try:
        with pytest.raises(LockedError, match=f"is being read by pid {reader.pid}"), index_lock(folder):
            pass
        with index_lock(folder, "read"):  # readers share
            pass
    finally:
        reader.stop()
    writer = Holder(folder, "write", "w")
    try:
        refused = pytest.raises(LockedError, match=f"is being written by pid {writer.pid}")
        with refused, index_lock(folder, "read"):
            pass
    finally:
        writer.stop()


@pytest.mark.slow
def test_wait_blocks_until_the_holder_finishes(folder):
    holder = Holder(folder, "write", "a")
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from lyre.basics.lock import index_lock\n"
            "with index_lock(sys.argv[1], 'write', wait=True): print(time.time())",
            str(folder),
        ],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting
    released = time.time()
    holder.stop()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert float(out) >= released
    assert f"is being written by pid {holder.pid}" in err and "waiting until it finishes" in err


def test_killed_holder_never_blocks_and_is_taken_over(folder, capsys):
    holder = Holder(folder, "write", "a")
    os.kill(holder.pid, signal.SIGKILL)
    holder.process.wait(timeout=30)
    assert (folder / HOLDERS_DIR / f"{socket.gethostname()}.{holder.pid}.json").exists()  # left behind
    with index_lock(folder, "write"):
        records = sorted(p.name for p in (folder / HOLDERS_DIR).glob("*.json"))
        assert records == [f"{socket.gethostname()}.{os.getpid()}.json"]
    assert f"taking over the lock of pid {holder.pid}" in capsys.readouterr().err
    assert not list((folder / HOLDERS_DIR).glob("*.json"))  # released cleanly


def test_exited_holder_whose_forked_worker_keeps_the_lock_is_named(folder):
    script = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from lyre.basics.lock import index_lock
        folder = Path(sys.argv[1])
        with index_lock(folder, "write"):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            time.sleep(0.2)
            os._exit(0)  # the parent dies holding the lock; its forked worker still has the descriptor
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=REPOSITORY)
    assert parent.wait(timeout=30) == 0
    with pytest.raises(LockedError) as error, index_lock(folder, "write"):
        pass
    assert str(error.value).startswith(f"{folder} is locked by processes that pid {parent.pid} on ")
    assert "started before it exited; stop them (`lsof" in str(error.value)
    workers = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _holds(int(pid), folder)]
    assert len(workers) == 1
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with index_lock(folder, "write"):
                break
        except LockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _holds(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` has ``folder``'s lock file open (what ``lsof`` would list)."""
    target = str(folder / ".lyre.lock")
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_job_array_slices_run_together_and_keep_writers_out(folder):
    first, second = Holder(folder, "slice", "s1"), Holder(folder, "slice", "s2")  # both hold at once
    try:
        with (
            pytest.raises(
                LockedError, match=r"is being encoded \(job-array slices\) by pid \d+ .* \(and 1 other"
            ),
            index_lock(folder, "write"),
        ):
            pass
        with index_lock(folder, "read"):  # search may read the complete stages meanwhile
            pass
    finally:
        first.stop()
        second.stop()


@pytest.mark.slow
def test_promote_waits_for_the_other_slices(folder):
    other = Holder(folder, "slice", "s1")
    with index_lock(folder, "slice") as lock:
        started = time.monotonic()
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import time, pathlib; time.sleep(1); pathlib.Path({str(other.release)!r}).write_text('go')",
            ]
        )
        lock.promote()
        assert time.monotonic() - started >= 0.9
        assert lock.mode == "write"
        assert other.process.wait(timeout=30) == 0
        record = json.loads((folder / HOLDERS_DIR / f"{socket.gethostname()}.{os.getpid()}.json").read_text())
        assert record["mode"] == "write"


def test_lock_is_reentrant_within_a_process(folder):
    with index_lock(folder, "write") as outer, index_lock(folder, "read") as inner:
        assert inner is outer
    refused = pytest.raises(ValueError, match="holds a read lock")
    with index_lock(folder, "read"), refused, index_lock(folder, "write"):
        pass


COUNT = """
import json, sys
from pathlib import Path
from lyre.basics.lock import manifest_update
folder = Path(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with manifest_update(folder):
        path = folder / "manifest.json"
        data = json.loads(path.read_text())
        data["count"] += 1
        path.write_text(json.dumps(data))
"""


def test_manifest_updates_of_concurrent_slices_are_serialised(folder):
    (folder / "manifest.json").write_text(json.dumps({"count": 0}))
    processes = [
        subprocess.Popen([sys.executable, "-c", COUNT, str(folder), "200"], cwd=REPOSITORY) for _ in range(4)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0, 0]
    assert json.loads((folder / "manifest.json").read_text())["count"] == 800  # no update lost


def test_write_lock_sweeps_temporaries_a_killed_run_left(folder, capsys):
    (folder / ".bm25.k2j3.tmp").mkdir()
    (folder / ".bm25.k2j3.tmp" / "data.npy").write_bytes(b"x" * 1000)
    (folder / "embeddings").mkdir()
    (folder / "embeddings" / ".chunk-000001.npy.ab12.tmp").write_bytes(b"y" * 24)
    (folder / ".docstore.old-4242").mkdir()
    (folder / "embeddings" / "chunk-000000.npy").write_bytes(b"kept")
    with index_lock(folder, "slice"):  # a slice never sweeps: other slices' temporaries look the same
        assert (folder / ".bm25.k2j3.tmp").exists()
    with index_lock(folder, "write"):
        left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if HOLDERS_DIR not in str(p))
    assert left == [".lyre.lock", "embeddings", "embeddings/chunk-000000.npy"]
    assert "removed 3 temporary file(s) and folder(s) (1.0 KiB)" in capsys.readouterr().err


def test_index_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "index").write_text("not a folder")
    with pytest.raises(ResourceError) as error, index_lock(tmp_path / "index", "write"):
        pass
    assert str(error.value) == (
        f"{tmp_path / 'index'}: {tmp_path / 'index'} is a file where a folder is needed; choose another out"
    )


def test_reading_a_missing_index_is_one_line(tmp_path):
    with pytest.raises(LyreError, match="no such index folder"), index_lock(tmp_path / "absent", "read"):
        pass


HOLD_OUTPUT = """
import sys
from lyre.basics.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_an_output_lock_is_reentrant_refuses_others_and_leaves_no_file(tmp_path):
    out = tmp_path / "runs" / "x.run"
    with output_lock(out), output_lock(out):  # the command holds it; its writer takes it again
        assert output_lock_path(out).exists()
        refused = subprocess.run(
            [sys.executable, "-c", HOLD_OUTPUT, str(out)], cwd=REPOSITORY, capture_output=True, text=True,
            input="\n", timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1 and "LockedError" in refused.stderr
        assert f"out {out}: is being written by pid {os.getpid()} on {socket.gethostname()}" in refused.stderr
    assert not (tmp_path / "runs").exists()  # nothing was written: the folder it made is gone too


def test_a_killed_holder_of_an_output_lock_blocks_nothing(tmp_path):
    out = tmp_path / "x.run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(out)], cwd=REPOSITORY, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"is being written by pid {holder.pid}"), output_lock(out):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert output_lock_path(out).exists()  # left behind by the kill, with the dead holder's record
    with output_lock(out):
        out.write_text("written\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.run"]
