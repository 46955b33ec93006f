"""Helpers the test modules import: the `lyre` command line as a user runs it, where the shared BEIR
collections are, a process holding an index's lock, the one-line error check and polling.

Fixtures live in ``conftest.py`` (pytest finds them there); everything a test imports by name lives here,
so no test imports from ``conftest``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLE = REPOSITORY / "data" / "sample"
DATA_VARIABLE = "LYRE_DATA"


def change_at(value: dict, path: tuple[str, ...], new: object) -> None:
    """Set the entry of ``value`` that the keys ``path`` lead to to ``new``, or delete it when ``new`` is
    ``KeyError``: one damaged field of a JSON record, for the tests that read it back."""
    *parents, last = path
    target = value
    for part in parents:
        target = target[part]
    if new is KeyError:
        del target[last]
    else:
        target[last] = new


def shared_data_root() -> Path:
    """``$LYRE_DATA`` when set, otherwise ``shared/data`` beside the repository."""
    configured = os.environ.get(DATA_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


class LyreCli:
    """`lyre` run as a subprocess (``python -m lyre``) of this interpreter, as a user runs it."""

    def argv(self, *args: str | Path) -> list[str]:
        """The command line, for callers that start and stop the process themselves."""
        return [sys.executable, "-m", "lyre", *map(str, args)]

    def __call__(
        self,
        *args: str | Path,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run it to completion; with ``check`` a non-zero exit fails the test showing lyre's stderr."""
        result = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=env, cwd=REPOSITORY
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result


HOLD_WRITE = """
import sys
from lyre.basics.lock import index_lock
with index_lock(sys.argv[1], "write"):
    print("held", flush=True)
    sys.stdin.readline()
"""
"""A program holding an index's write lock, as ``lyre index`` does, until a line arrives on its stdin."""


@contextlib.contextmanager
def holding_write_lock(index: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``index``'s write lock (as ``lyre index`` does) while the block runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE, str(index)], cwd=REPOSITORY, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.communicate("\n", timeout=30)


def bm25_index_and_run(folder: Path, lyre: LyreCli, sample: Path) -> tuple[Path, Path]:
    """A BM25 index of the sample in ``folder`` and a BM25 run of its 30 queries (20 documents each)."""
    index, run = folder / "index", folder / "bm25.run"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only")
    lyre(
        "-q", "search", "--index", index, "--queries", sample / "queries.tsv", "--mode", "bm25",
        "--rerank-depth", "0", "--k", "20", "--out", run,
    )  # fmt: skip
    return index, run


CLI_PROBE = """
import sys
from lyre.cli.app import main
sys.argv = ["lyre", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print("MODULES=" + ",".join(sorted(sys.modules)))
"""


def modules_imported_by(*argv: str | Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `lyre ARGV` in a fresh interpreter: its result (exit 0 checked) and every module it imported."""
    result = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, *map(str, argv)], capture_output=True, text=True, cwd=REPOSITORY,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    marker = [line for line in result.stdout.splitlines() if line.startswith("MODULES=")][-1]
    return result, set(marker.removeprefix("MODULES=").split(","))


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str | Path) -> str:
    """The single ``error:`` line of a failed quiet command, checked for exit code 2 and ``fragments``."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 120) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
