"""Fixtures shared by the test modules: tiny Qwen2 model folders, the `lyre` command line as a user runs
it, and the shared BEIR collections.

The shared data lies next to the repository (``<repo>/../shared/data``), never inside it; ``LYRE_DATA``
points elsewhere. A test that needs a collection skips, naming the folder it looked in, only when the
collection is absent from the default place; when ``LYRE_DATA`` was set on purpose and the collection is
missing there, the test fails instead, so a mistyped path never turns a run into silent skips.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from embed_fixtures import build_tiny_qwen

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLE = REPOSITORY / "data" / "sample"
DATA_VARIABLE = "LYRE_DATA"


def shared_data_root() -> Path:
    """``$LYRE_DATA`` when set, otherwise ``shared/data`` beside the repository."""
    configured = os.environ.get(DATA_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


class LyreCli:
    """`lyre` run as a subprocess (``python -m cli``) of this interpreter, as a user runs it."""

    def argv(self, *args: str | Path) -> list[str]:
        """The command line, for callers that start and stop the process themselves."""
        return [sys.executable, "-m", "cli", *map(str, args)]

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


@pytest.fixture(scope="session")
def lyre() -> LyreCli:
    return LyreCli()


@pytest.fixture(scope="session")
def sample() -> Path:
    """The 120-document sample shipped in the repository (corpus, queries, qrels)."""
    return SAMPLE


@pytest.fixture(scope="session")
def shared_collection() -> Callable[[str], Path]:
    """``shared_collection("scifact")``: the folder of a shared BEIR collection, or a skip saying where
    it was looked for (a failure when ``LYRE_DATA`` names a folder without it)."""

    def locate(name: str) -> Path:
        folder = shared_data_root() / name
        if (folder / "corpus.jsonl").is_file():
            return folder
        where = f"{folder} (no corpus.jsonl)"
        if DATA_VARIABLE in os.environ:
            pytest.fail(f"{DATA_VARIABLE} is set but the shared BEIR collection {name!r} is not at {where}")
        pytest.skip(
            f"shared BEIR collection {name!r} not found at {where}; set {DATA_VARIABLE} to its parent"
        )

    return locate


@pytest.fixture(scope="session")
def scifact(shared_collection: Callable[[str], Path]) -> Path:
    return shared_collection("scifact")


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen2 embedding model (lychee-embed's shape, hidden 64) with the real Qwen
    tokenizer, built once per session; tests only read it."""
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def qwen_reranker_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a language-model head (lychee-rerank's yes/no shape). Large initial weights
    spread p(yes) far from 0.5, so a mismatch between two scoring paths shows."""
    folder = tmp_path_factory.mktemp("tiny-qwen2-reranker")
    return build_tiny_qwen(folder, causal_lm=True, initializer_range=0.5)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (real MiniLM tokenizer): an embedding model that encodes the sample in a blink."""
    from scale_fixtures import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def corpus70(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 generated documents: five chunks of 16 rows, the last one short."""
    from scale_fixtures import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", documents=70)


HOLD_WRITE = """
import sys
from basics.lock import index_lock
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
from cli.app import main
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
