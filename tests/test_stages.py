"""The stage runner as `lyre index` uses it: every option is validated before any file changes or any model
loads, and a rerun rebuilds exactly the stages whose options changed (and what derives from them).

All on the 120-document sample with a tiny BERT model, so a whole index builds in seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPOSITORY, SAMPLE, LyreCli

pytest.importorskip("faiss")

HEAVY = ("torch", "transformers", "faiss")

#: Runs `lyre` in-process, then reports which heavy libraries the command imported: loading a model (or
#: Faiss) cannot happen without them.
PROBE = f"""
import sys
from lyre.cli.app import main
sys.argv = ["lyre", *sys.argv[1:]]
try:
    main()
    code = 0
except SystemExit as exit:
    code = exit.code
print("imported:", sorted(name for name in {HEAVY} if name in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def probe(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=120,
    )


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time: any write shows up."""
    return {
        str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()
    }


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """The top-level folders (or files) whose content was written, added or removed."""
    names = {name for name in {*before, *after} if before.get(name) != after.get(name)}
    return {name.split("/")[0] for name in names}


@pytest.fixture(scope="module")
def model(tiny_bert: Path) -> Path:
    return tiny_bert


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model: Path, lyre: LyreCli) -> Path:
    index = tmp_path_factory.mktemp("stages") / "index"
    lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model)
    return index


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    """A private copy of the complete index (mtimes kept), for a test that rebuilds part of it."""
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "args", "named"),
    [
        ("ingest", ["--on-error", "maybe"], "--on-error maybe"),
        ("bm25", ["--k1", "-1"], "--k1 -1.0: must be greater than 0"),
        ("bm25", ["--b", "1.5"], "--b 1.5: must be at most 1"),
        ("bm25", ["--bm25-method", "bm42"], "--bm25-method bm42"),
        ("bm25", ["--stemmer", "klingon"], "--stemmer klingon"),
        ("encode", ["--chunk-rows", "0"], "--chunk-rows 0: must be at least 1"),
        ("encode", ["--slice-id", "2", "--slices", "2"], "--slice-id 2: must be below --slices (2)"),
        ("encode", ["--engine", "ray", "--pooling", "mean"], "--pooling mean: engine ray"),
        ("encode", ["--dtype", "int4"], "--dtype int4"),
        ("dense", ["--recall-target", "2"], "--recall-target 2.0: must be at most 1"),
        ("dense", ["--refine", "-5"], "--refine -5: must be at least 0"),
        ("dense", ["--nprobe", "0"], "--nprobe 0: must be at least 1"),
        ("dense", ["--nprobe", "-3"], "--nprobe -3: must be at least 1"),
        ("dense", ["--index-type", "ivfpq"], "needs at least 256 vectors to train its PQ codebooks"),
        ("dense", ["--index-type", "ivfpq"], "and this index has 120 vectors; use flat"),
    ],
)
def test_an_invalid_option_fails_before_any_file_changes_or_model_loads(
    built: Path, model: Path, family: str, args: list[str], named: str
) -> None:
    before = listing(built)
    result = probe("index", SAMPLE / "corpus.jsonl", "--out", built, "--embed-model", model, *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in errors[0], family
    assert "imported: []" in result.stderr
    assert listing(built) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--index-type", "ivfpq"], "--index-type ivfpq: needs at least 256 vectors to train its PQ "
         "codebooks and the corpus has 20 documents; use flat"),
        (["--nlist", "8"], "--nlist 8: applies only to an ivfpq index, and the corpus has 20 documents, "
         "which get a flat index with --index-type auto"),
        (["--index-type", "ivfpq", "--nlist", "300"], "--index-type ivfpq: needs at least 256 vectors"),
        (["--index-type", "flat", "--nprobe", "4"], "--nprobe 4: applies only to an ivfpq index, not to "
         "--index-type flat"),
        (["--index-type", "ivfpq", "--pq-m", "7"], "--pq-m 7: PQ m=7 does not divide the dimension 64"),
    ],
)  # fmt: skip
def test_dense_options_that_the_corpus_size_refuses_are_refused_before_any_work(
    tmp_path: Path, model: Path, args: list[str], named: str
) -> None:
    """A new index of 20 documents: the corpus is counted before ingest (up to the count that decides), so
    nothing is ingested, indexed or encoded before the refusal; the folder is never made."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join((SAMPLE / "corpus.jsonl").read_text().splitlines(keepends=True)[:20]))
    out = tmp_path / "index"
    result = probe("index", corpus, "--out", out, "--embed-model", model, *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in errors[0]
    assert "imported: []" in result.stderr  # no model, no Faiss: nothing was encoded
    assert not out.exists()


def test_an_invalid_encode_option_fails_the_same_way_in_lyre_encode(built: Path, model: Path) -> None:
    before = listing(built)
    result = probe("encode", "--index", built, "--embed-model", model, "--token-budget", "0")
    assert result.returncode == 2 and "error: --token-budget 0: must be at least 1" in result.stderr
    assert "imported: []" in result.stderr and listing(built) == before


def test_an_up_to_date_rerun_builds_nothing(built: Path, model: Path, lyre: LyreCli) -> None:
    before = listing(built)
    lines = lyre(
        "-q", "index", SAMPLE / "corpus.jsonl", "--out", built, "--embed-model", model
    ).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["docstore", "bm25", "embeddings", "dense"]
    assert all(": up to date (" in line for line in lines)
    assert listing(built) == before


def test_a_changed_dense_option_rebuilds_dense_alone(index: Path, model: Path, lyre: LyreCli) -> None:
    before = listing(index)
    out = lyre(
        "-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model, "--shard-rows", "50"
    )
    assert "dense: exact flat index over 120 vectors in 3 shards" in out.stdout
    assert changed(before, listing(index)) == {"dense", "manifest.json"}


def test_a_changed_bm25_option_rebuilds_bm25_alone_and_keeps_embeddings(
    index: Path, model: Path, lyre: LyreCli
) -> None:
    before = listing(index)
    out = lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model, "--k1", "1.2")
    assert "embeddings: up to date" in out.stdout and "dense: up to date" in out.stdout
    assert changed(before, listing(index)) == {"bm25", "manifest.json"}


@pytest.mark.slow
def test_encode_with_its_own_chunk_size_is_finished_by_index(
    tmp_path: Path, model: Path, lyre: LyreCli
) -> None:
    index = tmp_path / "index"
    lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--bm25-only")
    encoded = lyre("-q", "encode", "--index", index, "--embed-model", model, "--chunk-rows", "50").stdout
    assert encoded.startswith("embeddings: 120 documents")
    chunks = sorted(path.name for path in (index / "embeddings").glob("chunk-*.done.json"))
    out = lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model).stdout
    assert "embeddings: up to date" in out and "dense: exact flat index" in out
    assert sorted(path.name for path in (index / "embeddings").glob("chunk-*.done.json")) == chunks
    assert len(chunks) == 3  # 120 rows in chunks of 50, as `lyre encode` started them


@pytest.mark.slow
def test_a_slice_encodes_its_chunks_and_leaves_dense_to_the_finalize_run(
    tmp_path: Path, model: Path, lyre: LyreCli
) -> None:
    index = tmp_path / "index"
    lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--bm25-only")
    lyre("-q", "encode", "--index", index, "--embed-model", model, "--chunk-rows", "50", "--slice-id", "0",
         "--slices", "2")  # fmt: skip
    corpus = SAMPLE / "corpus.jsonl"
    # The flags' former names still work for one release (hidden from --help), with a note.
    sliced = lyre("-q", "index", corpus, "--out", index, "--embed-model", model, "--shard-id", "1",
                  "--num-shards", "2")  # fmt: skip
    assert "left to the finalize step" in sliced.stdout and not (index / "dense").exists()
    assert "note: --shard-id is now --slice-id" in sliced.stderr
    assert "note: --num-shards is now --slices" in sliced.stderr
    final = lyre("-q", "index", SAMPLE / "corpus.jsonl", "--out", index, "--embed-model", model).stdout
    assert "embeddings: up to date" in final and "dense: exact flat index" in final
