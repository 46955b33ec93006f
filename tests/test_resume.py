"""`lyre index` killed with SIGKILL in every stage, rerun, ends with exactly the uninterrupted index.

Kill points are found by polling the index folder (no hooks in the code): the ingest's temporary docstore
appearing, BM25 starting once the docstore is recorded, the embedding store appearing (the chunk is then
being encoded), the dense folder appearing. Each interrupted build is the same command rerun, as a user
would. (Resuming at chunk granularity is covered by the encode and Ray engine tests: `lyre index` has
no --chunk-rows, and several 8192-row chunks would make this test minutes long on 2 cores.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lyre.indexes.docstore import DocStore
from lyre.indexes.manifest import STAGES, read_manifest
from scale_fixtures import save_tiny_bert, write_corpus

if TYPE_CHECKING:
    from helpers import LyreCli

pytest.importorskip("faiss")

DOCUMENTS = 3000
QUERIES = ["protein cell growth", "vaccine immune response", "brain tissue expression", "clinical trial dose"]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


def stages(index: Path) -> set[str]:
    return {name for name, record in read_manifest(index)["stages"].items() if record.get("complete")}


def in_ingest(index: Path) -> bool:
    return any(path.name.startswith(".docstore.") for path in index.glob(".docstore.*"))


def in_bm25(index: Path) -> bool:
    return "docstore" in stages(index)


def in_encode(index: Path) -> bool:
    return (index / "embeddings" / "store.json").exists()


def in_dense(index: Path) -> bool:
    return (index / "dense").exists()


def kill_when(command: list[str], ready: Callable[[], bool], log: Path) -> int:
    """Run ``command`` and SIGKILL its process group as soon as ``ready()``; its exit status."""
    with open(log, "ab") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=environment(), start_new_session=True
        )
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        return process.wait()


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    queries = root / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": text}) + "\n" for i, text in enumerate(QUERIES))
    )
    return {
        "root": root,
        "model": save_tiny_bert(root / "tiny-bert"),
        "corpus": write_corpus(root / "corpus.jsonl", DOCUMENTS, max_words=20),
        "queries": queries,
    }


def index_command(lyre: LyreCli, setup: dict[str, Path], index: Path) -> list[str]:
    return lyre.argv(
        "index", str(setup["corpus"]), "--out", str(index), "--embed-model", str(setup["model"]),
        "--index-type", "ivfpq",
    )  # fmt: skip


def search_command(lyre: LyreCli, setup: dict[str, Path], index: Path, out: Path, mode: str) -> list[str]:
    return lyre.argv(
        "-q", "search", "--index", str(index), "--queries", str(setup["queries"]), "--out", str(out),
        "--mode", mode, "--rerank-depth", "0", "--k", "50", "--depth", "50",
    )  # fmt: skip


def search(lyre: LyreCli, setup: dict[str, Path], index: Path, mode: str) -> str:
    out = index.parent / f"{index.name}.{mode}.run"
    result = run(search_command(lyre, setup, index, out, mode))
    assert result.returncode == 0, result.stderr
    return out.read_text()


def embedding_files(index: Path) -> dict[str, bytes]:
    folder = index / "embeddings"
    return {path.name: path.read_bytes() for path in sorted(folder.glob("chunk-*.npy"))}


@pytest.mark.slow
def test_killed_in_every_stage_then_rerun_equals_an_uninterrupted_build(
    lyre: LyreCli, setup: dict[str, Path]
) -> None:
    reference = setup["root"] / "reference"
    done = run(index_command(lyre, setup, reference))
    assert done.returncode == 0, done.stderr
    assert stages(reference) == set(STAGES)

    index = setup["root"] / "interrupted"
    command = index_command(lyre, setup, index)
    log = setup["root"] / "interrupted.log"
    landed = {}
    for name, ready in [("ingest", in_ingest), ("bm25", in_bm25), ("encode", in_encode), ("dense", in_dense)]:
        status = kill_when(command, lambda ready=ready: ready(index), log)
        assert status == -signal.SIGKILL, (
            f"the build finished before the {name} kill point: {log.read_text()}"
        )
        landed[name] = sorted(stages(index))
        if name == "encode":
            assert "embeddings" not in stages(index)
            refused = run(search_command(lyre, setup, index, index.parent / "refused.run", "dense"))
            assert refused.returncode == 2 and refused.stderr.startswith("error: ")
            assert (
                refused.stderr.count("\n") == 1
                and "incomplete" in refused.stderr
                and "lyre index" in refused.stderr
            )
            assert not (index.parent / "refused.run").exists()
    assert landed["ingest"] == [] and "bm25" not in landed["bm25"]
    assert "dense" not in landed["dense"]
    finished = run(command)
    assert finished.returncode == 0, finished.stderr

    assert stages(index) == set(STAGES)
    assert DocStore.open(index / "docstore").docids() == DocStore.open(reference / "docstore").docids()
    assert embedding_files(index) == embedding_files(reference)
    for mode in ("bm25", "dense", "hybrid"):
        assert search(lyre, setup, index, mode) == search(lyre, setup, reference, mode), mode


@pytest.mark.slow
def test_search_refuses_an_index_killed_during_ingest(lyre: LyreCli, setup: dict[str, Path]) -> None:
    index = setup["root"] / "killed-in-ingest"
    status = kill_when(
        index_command(lyre, setup, index), lambda: in_ingest(index), setup["root"] / "ingest.log"
    )
    assert status == -signal.SIGKILL
    refused = run(search_command(lyre, setup, index, setup["root"] / "refused.run", "bm25"))
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "lyre" in refused.stderr
    assert refused.stderr.count("\n") == 1
