"""``lyre serve`` as a user runs it: ready line, a served request, the index held under its read lock for
the server's life and released on Ctrl-C; settings refused before anything loads, in one line."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
from helpers import REPOSITORY, LyreCli, holding_write_lock, one_line_error
from serve_fixtures import http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path, tiny_bert: Path) -> Path:
    folder = tmp_path_factory.mktemp("serve-cli") / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", folder, "--embed-model", tiny_bert)
    return folder


def test_lyre_serve_is_ready_serves_holds_the_index_and_stops_on_ctrl_c(
    lyre: LyreCli, index: Path, sample: Path
) -> None:
    # As after `make demo`: no flag but the index (and a free port); the default reranker is not here.
    server = subprocess.Popen(
        lyre.argv("serve", "--index", index, "--port", "0"), cwd=REPOSITORY, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().strip()
        assert ready.startswith("ready: http://127.0.0.1:"), ready
        url = ready.removeprefix("ready: ")
        status, health = http(url + "/api/health")
        assert status == 200 and health["modes"] == ["bm25", "dense", "hybrid"]
        assert health["max_rerank_depth"] == 0  # served without reranking, said on stderr
        status, answer = http(url + "/api/search?q=bread")
        assert (
            status == 200 and len(answer["hits"]) == 10 and answer["settings"]["tag"] == "lyre.hybrid-rrf60"
        )
        refused = lyre(
            "-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only", "--overwrite", check=False
        )
        one_line_error(refused, "is being read by", "lyre serve")
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "serving without reranking" in stderr and "Traceback" not in stderr
    assert "then pass --rerank-model DIR" in stderr  # the notice offers the flag, as errors do
    with holding_write_lock(index):
        pass  # the read lock went with the server


def test_sigterm_stops_the_server_as_ctrl_c_does(lyre: LyreCli, index: Path) -> None:
    server = subprocess.Popen(
        lyre.argv("-q", "serve", "--index", index, "--port", "0", "--mode", "bm25"), cwd=REPOSITORY,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None and server.stdout.readline().startswith("ready: ")
    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0 and stderr == ""
    with holding_write_lock(index):
        pass


def test_lyre_serve_quiet_prints_only_the_ready_line(lyre: LyreCli, index: Path) -> None:
    server = subprocess.Popen(
        lyre.argv("-q", "serve", "--index", index, "--port", "0", "--mode", "bm25"), cwd=REPOSITORY,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    ready = server.stdout.readline()
    server.send_signal(signal.SIGINT)
    stdout, stderr = server.communicate(timeout=60)
    assert ready.startswith("ready: http://127.0.0.1:") and stdout == ""
    assert stderr == "" and server.returncode == 0


@pytest.fixture
def taken_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_settings_are_refused_in_one_line_before_anything_loads(
    lyre: LyreCli, index: Path, sample: Path, tmp_path: Path, taken_port: int
) -> None:
    bm25_only = tmp_path / "bm25"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", bm25_only, "--bm25-only")
    run = tmp_path / "bm25.run"
    lyre(
        "-q",
        "search",
        "--index",
        bm25_only,
        "--queries",
        sample / "queries.tsv",
        "--mode",
        "bm25",
        "--rerank-depth",
        "0",
        "--out",
        run,
    )
    serve = ("-q", "serve", "--index", index)
    cases = [
        ((*serve, "--k", "20", "--hits", "50"), ["--hits 50: must be at most --k 20"]),
        ((*serve, "--runs", run), ["--runs", "need --qrels"]),
        (
            (*serve, "--runs", run, "--qrels", sample / "qrels.tsv", "--measures", "nDCG@x"),
            ["unknown measure 'nDCG@x'"],
        ),
        (
            (*serve, "--port", str(taken_port)),
            [f"--port {taken_port}: cannot be listened on", "pick another"],
        ),
        ((*serve, "--host", "no.such.host.invalid"), ["--host no.such.host.invalid: cannot be listened on"]),
        ((*serve, "--batch-size", "0"), ["--batch-size 0: must be at least 1"]),
        (("-q", "serve", "--index", bm25_only), ["the embeddings stage is missing", "--embed-model"]),
        (
            ("-q", "serve", "--index", bm25_only, "--mode", "bm25", "--rerank-depth", "5"),
            ["--rerank-depth 0"],
        ),
    ]
    for argv, fragments in cases:
        one_line_error(lyre(*argv, check=False, timeout=120), *fragments)
    with holding_write_lock(index):
        one_line_error(lyre(*serve, "--port", "0", check=False), "is being written", "--wait")
