"""Integrity records and checks on every kind of file an index holds, each truncated, emptied, bit-flipped
and deleted: the quick check on open (sizes, and the hashes of the metadata files) and ``--verify``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lyre.basics.errors import LyreError
from lyre.indexes.integrity import (
    QUICK_HASH_LIMIT,
    damage_error,
    file_entries,
    is_checked_on_open,
    quick_check,
    require_intact,
    verify,
)
from lyre.indexes.metadata import FileEntry, StageRecord

FILES = (
    "docstore/part-000000.parquet",
    "docstore/ids.hash.npy",
    "bm25/data.csc.index.npy",
    "bm25/vocab.index.json",
    "embeddings/chunk-000000.npy",
    "dense/shard-000000.faiss",
)


def _build(index: Path) -> None:
    """One real file of each kind an index holds, written with the library that writes it in lyre."""
    import faiss

    rng = np.random.default_rng(7)
    for folder in ("docstore", "bm25", "embeddings", "dense"):
        (index / folder).mkdir(parents=True)
    table = pa.table({"docid": ["d1", "d2", "d3"], "title": ["", "t", ""], "text": ["a b", "c", "d e f"]})
    pq.write_table(table, index / "docstore/part-000000.parquet")
    np.save(index / "docstore/ids.hash.npy", np.array([3, 1, 2], dtype=np.uint64))
    np.save(index / "bm25/data.csc.index.npy", rng.random(50, dtype=np.float32))
    (index / "bm25/vocab.index.json").write_text(json.dumps({"a": 0, "b": 1, "c": 2}))
    vectors = rng.standard_normal((16, 8)).astype(np.float16)
    np.save(index / "embeddings/chunk-000000.npy", vectors)
    flat = faiss.IndexFlatIP(8)
    flat.add(vectors.astype(np.float32))
    faiss.write_index(flat, str(index / "dense/shard-000000.faiss"))
    (index / "bm25/.vocab.index.json.x1y2.tmp").write_text("a temporary: never recorded")


@pytest.fixture
def index(tmp_path: Path) -> tuple[Path, StageRecord]:
    index = tmp_path / "index"
    _build(index)
    files = file_entries(index, ["docstore", "bm25", "embeddings", index / "dense/shard-000000.faiss"])
    return index, StageRecord(summary="all", params={}, files=files)


def test_entries_record_size_and_sha256_of_every_file(index):
    folder, record = index
    assert sorted(record.files) == sorted(FILES)  # the hidden temporary is not part of the stage
    for relative, entry in record.files.items():
        data = (folder / relative).read_bytes()
        assert entry == FileEntry(len(data), hashlib.sha256(data).hexdigest())
    assert quick_check(folder, record) == [] and verify(folder, record) == []


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _delete(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "truncated": (_truncate, "bytes, but"),
    "emptied": (_empty, "empty, but"),
    "deleted": (_delete, "missing"),
    "bit-flipped": (_flip, None),  # same size: only the hash sees it
}
CHANGED = "content changed since it was written (SHA-256 differs)"


@pytest.mark.parametrize("relative", FILES)
@pytest.mark.parametrize("kind", DAMAGE)
def test_every_kind_of_damage_to_every_kind_of_file_is_found(index, relative, kind):
    folder, record = index
    damage, size_problem = DAMAGE[kind]
    damage(folder / relative)
    found = verify(folder, record)
    assert [d.path for d in found] == [relative]
    if size_problem is None:
        assert found[0].problem == CHANGED
        # on open, only a metadata file is hashed: the data files are left to --verify
        assert quick_check(folder, record) == (found if relative.endswith(".json") else [])
        return
    assert quick_check(folder, record) == found
    assert size_problem in found[0].problem
    with pytest.raises(LyreError) as error:
        require_intact(folder, "bm25", record, corpus="data/c.jsonl")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / relative}: ")
    assert message.endswith(
        f"; the bm25 stage is damaged; rebuild it with `lyre index data/c.jsonl --out {folder} --verify`"
    )


def test_a_deleted_stage_folder_names_its_first_file_and_counts_the_rest(index):
    folder, record = index
    for file in (folder / "bm25").iterdir():
        file.unlink()
    (folder / "bm25").rmdir()
    error = damage_error(folder, "bm25", quick_check(folder, record))
    assert str(error) == (
        f"{folder / 'bm25/data.csc.index.npy'}: missing (and 1 more file(s)); the bm25 stage is damaged; "
        f"rebuild it with `lyre index CORPUS --out {folder} --verify`"
    )


def test_a_folder_where_a_file_was_is_damage(index):
    folder, record = index
    (folder / "bm25/vocab.index.json").unlink()
    (folder / "bm25/vocab.index.json").mkdir()
    assert [(d.path, d.problem) for d in quick_check(folder, record)] == [
        ("bm25/vocab.index.json", "not a file")
    ]


def test_the_quick_check_hashes_the_metadata_files_lyre_parses_up_to_a_size() -> None:
    small, large = FileEntry(200, "ab" * 32), FileEntry(QUICK_HASH_LIMIT + 1, "ab" * 32)
    assert is_checked_on_open("bm25/vocab.index.json", small)
    assert not is_checked_on_open("bm25/vocab.index.json", large)  # hashed by the reader when read
    assert not is_checked_on_open("embeddings/chunk-000003.done.json", small)  # never parsed
    assert not is_checked_on_open("dense/shard-000000.faiss", small)
