"""The index side under faults (issue 11): concurrent writers, job-array slices, a full disk, a file where
the index folder should be, a damaged manifest, every kind of index file damaged, replaced model weights.

Every failure must be one line ``error: ...`` naming the path, exit code 2, no traceback; the index
files written before are byte-identical afterwards; and the same command succeeds once the cause is gone,
with no manual clean-up. All on the 120-document sample with a tiny BERT, so a whole index builds in a
few seconds; a full disk is the process's file-size limit (``RLIMIT_FSIZE``) or a private 1 MiB tmpfs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import REPOSITORY, SAMPLE, LyreCli, holding_write_lock, one_line_error, wait_for
from lyre.basics.errors import LyreError
from lyre.basics.lock import LockedError
from lyre.basics.resources import is_temp_name
from lyre.indexes.manifest import STAGES, clear_stage, read_manifest
from lyre.indexes.open_index import open_for_search

pytest.importorskip("faiss")

CORPUS = SAMPLE / "corpus.jsonl"
CHUNK_ROWS = 50
"""120 documents in 3 chunks: enough for three job-array slices."""
FILE_LIMIT = 16 * 1024
"""A file-size limit below the docstore part (25 KB), the BM25 arrays (20 KB) and the Faiss shard (32 KB)
of the sample, above every record and the manifest."""
UNDER_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, getattr(signal, sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.argv = ["lyre", *sys.argv[2:]]
from lyre.cli.app import main
main()
"""
VOLATILE = ("done.json", "dense/params.json", "bm25/bm25.json")
"""Recorded files holding timings or times (a chunk's seconds, the dense build's, BM25's provenance), which
differ between two builds."""


def index_args(out: Path, model: Path, *extra: str | Path) -> list[str | Path]:
    return ["index", CORPUS, "--out", out, "--embed-model", model, "--chunk-rows", str(CHUNK_ROWS), *extra]


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (temporaries included, the lock files left out)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".lyre.") for part in path.relative_to(folder).parts)
    }


def recorded(index: Path) -> dict[str, str]:
    """The SHA-256 the manifest records for every file of every stage, timing records left out."""
    stages = read_manifest(index)["stages"]
    return {
        path: entry["sha256"]
        for record in stages.values()
        for path, entry in record["files"].items()
        if not path.endswith(VOLATILE)
    }


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if is_temp_name(path.name)]


def under_file_limit(*args: str | Path, on_limit: str = "SIG_IGN") -> subprocess.CompletedProcess[str]:
    """`lyre` whose files may not grow beyond :data:`FILE_LIMIT`: a write beyond fails with EFBIG, or
    (``on_limit="SIG_DFL"``) the kernel kills the process with SIGXFSZ, as a crash would."""
    return subprocess.run(
        [sys.executable, "-c", UNDER_LIMIT.format(limit=FILE_LIMIT), on_limit, *map(str, args)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def model(tiny_bert: Path) -> Path:
    return tiny_bert


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model: Path, lyre: LyreCli) -> Path:
    """The reference: a complete index built serially, once."""
    index = tmp_path_factory.mktemp("built") / "index"
    lyre("-q", *index_args(index, model))
    return index


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    """A private copy of the complete index, for a test that damages or rebuilds it."""
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> Path:
    """An index holding only the docstore of the sample."""
    index = tmp_path_factory.mktemp("ingested") / "index"
    lyre("-q", "ingest", CORPUS, "--out", index)
    return index


# One writer per index folder -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_index_on_one_out_is_refused_naming_the_holder_and_waits_with_wait(
    tmp_path: Path, model: Path, lyre: LyreCli
) -> None:
    out = tmp_path / "index"
    first = subprocess.Popen(
        lyre.argv("-q", *index_args(out, model)), cwd=REPOSITORY, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: any((out / ".lyre.holders").glob("*.json")), "the first index to take the lock")
    waiter = subprocess.Popen(
        lyre.argv(*index_args(out, model), "--wait"), cwd=REPOSITORY, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    refused = lyre("-q", *index_args(out, model), check=False)
    one_line_error(refused, f"error: {out} is being written by pid {first.pid} on ", "pass --wait")
    first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert [line.split(":")[0] for line in first_out.splitlines()] == list(STAGES)
    waited_out, waited_err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, waited_err
    assert (
        f"{out} is being written by pid {first.pid}" in waited_err
        and "waiting until it finishes" in waited_err
    )
    lines = waited_out.splitlines()
    assert len(lines) == 4 and all(": up to date (" in line for line in lines)  # nothing built twice


@pytest.mark.slow
def test_overwrite_while_another_writer_holds_the_index_changes_nothing(
    index: Path, built: Path, model: Path, lyre: LyreCli
) -> None:
    before = snapshot(index)
    with holding_write_lock(index) as holder:
        refused = lyre("-q", *index_args(index, model, "--overwrite"), check=False)
        one_line_error(refused, f"{index} is being written by pid {holder.pid}", "--wait")
        assert snapshot(index) == before
    rebuilt = lyre("-q", *index_args(index, model, "--overwrite")).stdout
    assert "docstore: 120 documents" in rebuilt and "dense: exact flat index" in rebuilt
    assert recorded(index) == recorded(built) and temporaries(index) == []


@pytest.mark.slow
def test_a_copied_index_names_its_own_path_never_the_one_it_was_copied_from(
    index: Path, model: Path, lyre: LyreCli, tmp_path: Path
) -> None:
    """``cp -r idx/a idx/b`` while a command holds ``idx/a`` copies its holder record and its records:
    every message about ``idx/b`` names ``idx/b``. The copied holder never held ``idx/b``: it is neither
    taken over nor named; the up-to-date lines, a missing stage and a damaged file name the copy."""
    with holding_write_lock(index):
        copy = Path(shutil.copytree(index, tmp_path / "copy"))
        assert any((copy / ".lyre.holders").glob("*.json"))  # the original's holder came along
        rerun = lyre(*index_args(copy, model))  # runs while the original is still held
        shutil.rmtree(copy / "dense")
        clear_stage(copy, "dense")
        missing = lyre("-q", "search", "--index", copy, "--queries", SAMPLE / "queries.tsv",
                       "--mode", "dense", "--rerank-depth", "0", "--out", tmp_path / "dense.run",
                       check=False)  # fmt: skip
    assert str(index) not in rerun.stdout + rerun.stderr and "taking over" not in rerun.stderr
    assert [line.split(": ")[1].startswith("up to date") for line in rerun.stdout.splitlines()] == [True] * 4
    one_line_error(missing, f"error: {copy}: the dense stage is missing or incomplete; run `lyre index "
                   f"CORPUS --out {copy} --embed-model MODEL` to build or finish it")  # fmt: skip
    _truncate(copy / "bm25" / "bm25.json")
    damaged = lyre("-q", "search", "--index", copy, "--queries", SAMPLE / "queries.tsv", "--mode", "bm25",
                   "--out", tmp_path / "bm25.run", check=False)  # fmt: skip
    line = one_line_error(damaged, f"error: {copy / 'bm25' / 'bm25.json'}: ", f"--out {copy} --verify`")
    assert str(index) not in line


@pytest.mark.slow
def test_a_search_and_a_writer_exclude_each_other(index: Path, model: Path, lyre: LyreCli) -> None:
    before = snapshot(index)
    with open_for_search(index, ["bm25", "dense"]) as opened:
        assert set(opened.records) == set(STAGES)
        refused = lyre("-q", *index_args(index, model, "--overwrite"), check=False)
        one_line_error(refused, f"{index} is being read by pid ")
    assert snapshot(index) == before
    with holding_write_lock(index) as holder:
        refused_search = pytest.raises(LockedError, match=f"{index} is being written by pid {holder.pid}")
        with refused_search, open_for_search(index, ["bm25"]):
            pass


def _run_together(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    processes = [
        subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


@pytest.mark.slow
def test_encode_slices_run_at_once_and_equal_a_serial_build(
    tmp_path: Path, built: Path, model: Path, lyre: LyreCli
) -> None:
    out = tmp_path / "sliced"
    lyre("-q", "index", CORPUS, "--out", out, "--bm25-only")
    slices = _run_together([
        lyre.argv("-q", "encode", "--index", out, "--embed-model", model, "--chunk-rows", str(CHUNK_ROWS),
                  "--slice-id", str(shard), "--slices", "3")
        for shard in range(3)
    ])  # fmt: skip
    for result in slices:
        assert result.returncode == 0, result.stderr
    assert "embeddings" in read_manifest(out)["stages"]  # the last slice to finish recorded the stage
    final = lyre("-q", *index_args(out, model)).stdout
    assert "embeddings: up to date" in final and "dense: exact flat index" in final
    assert recorded(out) == recorded(built)


@pytest.mark.slow
def test_index_slices_on_a_new_folder_build_the_shared_stages_once_and_equal_a_serial_build(
    tmp_path: Path, built: Path, model: Path, lyre: LyreCli
) -> None:
    out = tmp_path / "sliced"
    slices = _run_together(
        [lyre.argv("-q", *index_args(out, model, "--slice-id", str(s), "--slices", "2")) for s in range(2)]
    )
    for result in slices:
        assert result.returncode == 0, result.stderr
        assert "left to the finalize step" in result.stdout
    docstore_lines = sorted(
        line for r in slices for line in r.stdout.splitlines() if line.startswith("docstore")
    )
    assert "up to date" in docstore_lines[1] and "up to date" not in docstore_lines[0]  # ingested once
    final = lyre("-q", *index_args(out, model)).stdout
    assert "embeddings: up to date" in final and "dense: exact flat index" in final
    assert recorded(out) == recorded(built)


@pytest.mark.slow
def test_overwrite_in_a_slice_is_refused(index: Path, model: Path, lyre: LyreCli) -> None:
    before = snapshot(index)
    args = ["encode", "--index", index, "--embed-model", model, "--slice-id", "0", "--slices", "2"]
    refused = lyre("-q", *args, "--overwrite", check=False)
    one_line_error(refused, f"{index}: --overwrite in a job-array slice would delete what the other slices")
    assert snapshot(index) == before


# A full disk, a file where the folder should be ------------------------------------------------------

SMALL_DISK = """
set -u
disk=$1; work=$2; shift 2
mount -t tmpfs -o size=1m tmpfs "$disk" || exit 99
cp -a "$work/ingested" "$disk/index"
"$@" "$disk/index" 2> "$work/full.err"; echo $? > "$work/full.rc"
cp -a "$disk/index" "$work/after-full"
mount -o remount,size=64m tmpfs "$disk" || exit 98
"$@" "$disk/index" 2> "$work/roomy.err"; echo $? > "$work/roomy.rc"
cp -a "$disk/index" "$work/after-roomy"
"""


@pytest.mark.slow
def test_bm25_on_a_full_disk_is_one_line_and_succeeds_once_there_is_room(
    tmp_path: Path, ingested: Path, lyre: LyreCli
) -> None:
    """Without the free-space check, the memory-mapped BM25 arrays died with SIGBUS on a full disk."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no way to mount a small disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    shutil.copytree(ingested, tmp_path / "ingested")
    command = ["unshare", "-rm", "sh", "-c", SMALL_DISK, "sh", str(disk), str(tmp_path)]
    lyre_bm25 = lyre.argv("-q", "index", CORPUS, "--bm25-only", "--out")
    result = subprocess.run(
        [*command, *lyre_bm25], cwd=REPOSITORY, capture_output=True, text=True, timeout=300
    )
    if result.returncode in (98, 99) or "unshare failed" in result.stderr:
        pytest.skip(f"this system does not allow a private tmpfs mount: {result.stderr.strip()}")
    full = subprocess.CompletedProcess(
        [], int((tmp_path / "full.rc").read_text()), "", (tmp_path / "full.err").read_text()
    )
    one_line_error(
        full, f"error: {disk / 'index'}: needs ", " is free in ", "free space there, or choose another --out"
    )
    assert snapshot(tmp_path / "after-full") == snapshot(ingested)  # byte-identical, no temporary left
    assert (tmp_path / "roomy.rc").read_text().strip() == "0", (tmp_path / "roomy.err").read_text()
    assert "bm25" in read_manifest(tmp_path / "after-roomy")["stages"]
    assert temporaries(tmp_path / "after-roomy") == []


@pytest.mark.slow
def test_bm25_past_the_file_size_limit_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, ingested: Path, lyre: LyreCli
) -> None:
    index = tmp_path / "index"
    shutil.copytree(ingested, index)
    before = snapshot(index)
    failed = under_file_limit("-q", "index", CORPUS, "--out", index, "--bm25-only")
    one_line_error(failed, f"error: {index / 'bm25'}: no space left to write it (File too large; ", "--out")
    assert snapshot(index) == before
    assert "bm25: 120 documents" in lyre("-q", "index", CORPUS, "--out", index, "--bm25-only").stdout


@pytest.mark.slow
def test_a_bm25_build_killed_mid_write_leaves_a_temporary_that_the_next_run_sweeps(
    tmp_path: Path, ingested: Path, lyre: LyreCli
) -> None:
    index = tmp_path / "index"
    shutil.copytree(ingested, index)
    killed = under_file_limit("-q", "index", CORPUS, "--out", index, "--bm25-only", on_limit="SIG_DFL")
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr
    assert [path.name.split(".")[1] for path in temporaries(index)] == ["bm25"]  # what a crash leaves
    rerun = lyre("index", CORPUS, "--out", index, "--bm25-only")
    assert f"{index}: removed 1 temporary file(s) and folder(s)" in rerun.stderr
    assert "bm25: 120 documents" in rerun.stdout and temporaries(index) == []


@pytest.mark.slow
def test_ingest_past_the_file_size_limit_keeps_the_previous_index(
    index: Path, model: Path, lyre: LyreCli
) -> None:
    before = snapshot(index)
    failed = under_file_limit("-q", *index_args(index, model, "--overwrite"))
    one_line_error(
        failed, f"error: {index / 'docstore'}: no space left to write it (File too large; ", "--out"
    )
    assert snapshot(index) == before
    assert "docstore: 120 documents" in lyre("-q", *index_args(index, model, "--overwrite")).stdout


@pytest.mark.slow
def test_a_first_ingest_that_fails_leaves_no_index_folder(tmp_path: Path, lyre: LyreCli) -> None:
    out = tmp_path / "new" / "index"
    failed = under_file_limit("-q", "ingest", CORPUS, "--out", out)
    one_line_error(failed, f"error: {out / 'docstore'}: no space left to write it (File too large; ")
    assert not out.parent.exists()  # nor the parent it made for it
    assert "docstore: 120 documents" in lyre("-q", "ingest", CORPUS, "--out", out).stdout


@pytest.mark.slow
def test_a_faiss_shard_past_the_file_size_limit_is_one_line(index: Path, model: Path, lyre: LyreCli) -> None:
    clear_stage(index, "dense")
    shutil.rmtree(index / "dense")
    before = snapshot(index)
    failed = under_file_limit("-q", *index_args(index, model))
    one_line_error(
        failed, f"error: {index / 'dense' / 'shard-000000.faiss'}: Faiss could not write it", "--out"
    )
    after = snapshot(index)
    assert {name: after.get(name) for name in before} == before  # the dense folder holds its settings only
    assert temporaries(index) == []
    assert "dense: exact flat index" in lyre("-q", *index_args(index, model)).stdout


@pytest.mark.slow
def test_index_out_that_is_a_file_is_one_line(tmp_path: Path, model: Path, lyre: LyreCli) -> None:
    out = tmp_path / "index"
    out.write_text("not an index\n")
    one_line_error(lyre("-q", *index_args(out, model), check=False), f"error: {out}: is a file")
    one_line_error(lyre("-q", "ingest", CORPUS, "--out", out, check=False), f"error: {out}: is a file")
    assert out.read_text() == "not an index\n"


@pytest.mark.slow
def test_a_truncated_gz_corpus_is_one_line_and_leaves_no_index_folder(tmp_path: Path, lyre: LyreCli) -> None:
    packed = gzip.compress(CORPUS.read_bytes())
    corpus = tmp_path / "corpus.jsonl.gz"
    corpus.write_bytes(packed[: len(packed) // 2])
    out = tmp_path / "index"
    one_line_error(lyre("-q", "index", corpus, "--out", out, "--bm25-only", check=False), f"error: {corpus}:")
    assert not out.exists()
    mine = tmp_path / "made-by-the-user"
    mine.mkdir()
    one_line_error(
        lyre("-q", "index", corpus, "--out", mine, "--bm25-only", check=False), f"error: {corpus}:"
    )
    assert mine.is_dir()  # not this command's to remove


# A damaged manifest, damaged index files -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "problem", "repair"),
    [
        (b"\x8b\x00 garbage", "not UTF-8 text (damaged)", "--verify"),
        (b"[1, 2, 3]", "not a lyre manifest (a list, not an object)", "--verify"),
        (b'{"format": 9, "stages": {}}', "index format 9 is newer than this lyre reads", "--overwrite"),
    ],
)
def test_a_damaged_manifest_is_one_line_and_the_repair_it_names_rebuilds(
    index: Path, model: Path, lyre: LyreCli, content: bytes, problem: str, repair: str
) -> None:
    """A damaged manifest loses every record, so ``--verify`` rebuilds every stage; a newer format is
    another lyre's index, which only ``--overwrite`` replaces."""
    manifest = index / "manifest.json"
    manifest.write_bytes(content)
    before = snapshot(index)
    refused = lyre("-q", *index_args(index, model), check=False)
    one_line_error(refused, f"error: {manifest}: {problem}", f"lyre index CORPUS --out {index} {repair}")
    assert snapshot(index) == before
    with pytest.raises(LyreError, match=re.escape(problem)), open_for_search(index, ["bm25"]):
        pass
    if repair == "--overwrite":
        one_line_error(lyre("-q", *index_args(index, model, "--verify"), check=False), problem)
        assert snapshot(index) == before
    rebuilt = lyre("-q", *index_args(index, model, repair)).stdout
    assert [line.split(":")[0] for line in rebuilt.splitlines()] == list(STAGES)
    with open_for_search(index, ["bm25", "dense"]) as opened:
        assert set(opened.records) == set(STAGES)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _delete(path: Path) -> None:
    path.unlink()


DAMAGE = {"truncated": _truncate, "emptied": _empty, "deleted": _delete}
FILES = {
    "docstore/part-00000.parquet": "docstore",
    "docstore/ids.hash.npy": "docstore",
    "bm25/data.csc.index.npy": "bm25",
    "bm25/vocab.index.json": "bm25",
    "embeddings/chunk-000000.npy": "embeddings",
    "embeddings/chunk-000001.rows.npy": "embeddings",
    "dense/shard-000000.faiss": "dense",
    "dense/params.json": "dense",
}


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("relative", FILES)
def test_search_refuses_every_damaged_file_naming_it_and_the_repair(
    index: Path, model: Path, relative: str, kind: str
) -> None:
    DAMAGE[kind](index / relative)
    with pytest.raises(LyreError) as error, open_for_search(index, ["bm25", "dense"]):
        pass
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{index / relative}: ")
    assert f"the {FILES[relative]} stage is damaged" in message
    assert f"`lyre index {CORPUS} --embed-model {model} --out {index} --verify`" in message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("relative", "kind"),
    [(relative, list(DAMAGE)[number % 3]) for number, relative in enumerate(FILES)],
)
def test_index_rebuilds_the_stage_of_a_damaged_file(
    index: Path, built: Path, model: Path, lyre: LyreCli, relative: str, kind: str
) -> None:
    DAMAGE[kind](index / relative)
    repaired = lyre(*index_args(index, model))
    assert f"{index / relative}: " in repaired.stderr
    assert f"rebuilding the {FILES[relative]} stage" in repaired.stderr
    assert recorded(index) == recorded(built)  # every file as the serial build wrote it
    with open_for_search(index, ["bm25", "dense"]):
        pass


def test_index_rebuilds_a_deleted_bm25_folder_alone(
    index: Path, built: Path, model: Path, lyre: LyreCli
) -> None:
    shutil.rmtree(index / "bm25")
    repaired = lyre("-q", *index_args(index, model)).stdout.splitlines()
    assert [line.split(": ")[1].startswith("up to date") for line in repaired] == [True, False, True, True]
    assert recorded(index) == recorded(built)


def test_encode_refuses_a_damaged_docstore_it_only_reads(index: Path, model: Path, lyre: LyreCli) -> None:
    _truncate(index / "docstore" / "part-00000.parquet")
    before = snapshot(index)
    refused = lyre("-q", "encode", "--index", index, "--embed-model", model, check=False)
    one_line_error(
        refused,
        f"error: {index / 'docstore' / 'part-00000.parquet'}: ",
        "the docstore stage is damaged",
        f"`lyre index {CORPUS} --embed-model {model} --out {index} --verify`",
    )
    assert snapshot(index) == before


def _swap_two_terms(path: Path) -> None:
    vocab = json.loads(path.read_text(encoding="utf-8"))
    first, second = [term for term, number in vocab.items() if 10 <= number < 100][:2]
    vocab[first], vocab[second] = vocab[second], vocab[first]  # ids of equal length: same size
    path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def _zero_vectors(path: Path) -> None:
    header = len(path.read_bytes()) - np.load(path).nbytes
    path.write_bytes(path.read_bytes()[:header] + bytes(path.stat().st_size - header))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("relative", "corrupt"),
    [
        ("embeddings/chunk-000001.npy", _zero_vectors),
        ("docstore/part-00000.parquet", _flip_a_byte),
    ],
)
def test_verify_finds_same_size_damage_and_rebuilds_that_stage(
    index: Path, built: Path, model: Path, lyre: LyreCli, relative: str, corrupt: Callable[[Path], None]
) -> None:
    size = (index / relative).stat().st_size
    corrupt(index / relative)
    assert (index / relative).stat().st_size == size
    unseen = lyre("-q", *index_args(index, model)).stdout.splitlines()
    assert all(": up to date (" in line for line in unseen)  # sizes alone cannot see it
    verified = lyre(*index_args(index, model, "--verify"))
    stage = relative.split("/")[0]
    assert (
        f"{index / relative}: content changed since it was written (SHA-256 differs); "
        f"rebuilding the {stage} stage"
    ) in verified.stderr
    assert "verify: 1 of " in verified.stderr
    assert recorded(index) == recorded(built)
    again = lyre(*index_args(index, model, "--verify"))
    assert "recorded files of" in again.stderr and "intact (sizes and SHA-256)" in again.stderr


@pytest.mark.slow
def test_same_size_damage_to_a_metadata_file_is_seen_on_open_and_rebuilt(
    index: Path, built: Path, model: Path, lyre: LyreCli
) -> None:
    """A metadata file lyre parses (here the vocabulary, two terms swapped) is hashed whenever the index is
    opened: a plain `lyre index` rebuilds its stage, where a data file's same-size damage needs --verify."""
    vocab = index / "bm25" / "vocab.index.json"
    size = vocab.stat().st_size
    _swap_two_terms(vocab)
    assert vocab.stat().st_size == size
    repaired = lyre(*index_args(index, model))
    assert (
        f"{vocab}: content changed since it was written (SHA-256 differs); rebuilding the bm25 stage"
    ) in repaired.stderr
    assert [line.split(": ")[1].startswith("up to date") for line in repaired.stdout.splitlines()] == [
        True, False, True, True,
    ]  # fmt: skip
    assert recorded(index) == recorded(built)


# The model that encoded the index ---------------------------------------------------------------------


def _negate_weights(folder: Path) -> None:
    """Replace the weights by others of the same architecture, config and file size."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    size = path.stat().st_size
    save_file({name: -tensor for name, tensor in load_file(path).items()}, path, metadata={"format": "pt"})
    assert path.stat().st_size == size


@pytest.mark.slow
def test_replaced_weights_are_refused_by_index_and_by_the_query_encoder(
    tmp_path: Path, model: Path, lyre: LyreCli
) -> None:
    """`lyre index` refuses rather than re-encodes: weights replaced by mistake should not cost a whole
    encoding, and the message says how to re-encode on purpose."""
    from lyre.indexes.query_encoder import load_index_embedder

    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    index = tmp_path / "index"
    lyre("-q", *index_args(index, folder))
    original = (folder / "model.safetensors").read_bytes()
    _negate_weights(folder)
    before = snapshot(index)
    refused = lyre("-q", *index_args(index, folder), check=False)
    one_line_error(
        refused,
        f"error: {index / 'embeddings'}: holds embeddings made with other settings (model_fingerprint)",
        "--overwrite",
    )
    assert snapshot(index) == before
    for name in (None, str(folder)):
        with pytest.raises(LyreError) as error:
            load_index_embedder(index, model=name, device="cpu")
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(
            f"{folder}: the model's files (weights, config, tokenizer or pooling) changed since {index} "
            "was encoded"
        )
        assert (
            f"put them back as they were, or re-encode with `lyre index {CORPUS} --out {index} --embed-model"
            in message
        )
        assert message.endswith("--overwrite`")
    (folder / "model.safetensors").write_bytes(original)
    assert all(
        ": up to date (" in line for line in lyre("-q", *index_args(index, folder)).stdout.splitlines()
    )
    assert load_index_embedder(index, device="cpu").encode_queries(["protein"]).shape == (1, 64)
