"""Integrity records and checks on every kind of file an index holds, each truncated, emptied, bit-flipped
and deleted; and the manifest parser on garbage."""

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
    check_sizes,
    damage_error,
    file_entries,
    parse_manifest_bytes,
    require_intact,
    verify,
)
from lyre.indexes.stages import StageRecord

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
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert check_sizes(folder, record) == [] and verify(folder, record) == []
    assert verify(folder, record.to_dict()) == []  # the manifest's dict form works the same


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


@pytest.mark.parametrize("relative", FILES)
@pytest.mark.parametrize("kind", DAMAGE)
def test_every_kind_of_damage_to_every_kind_of_file_is_found(index, relative, kind):
    folder, record = index
    damage, size_problem = DAMAGE[kind]
    damage(folder / relative)
    found = verify(folder, record)
    assert [d.path for d in found] == [relative]
    if size_problem is None:
        assert check_sizes(folder, record) == []
        assert found[0].problem == "content changed since it was written (SHA-256 differs)"
        return
    assert check_sizes(folder, record) == found
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
    error = damage_error(folder, "bm25", check_sizes(folder, record))
    assert str(error) == (
        f"{folder / 'bm25/data.csc.index.npy'}: missing (and 1 more file(s)); the bm25 stage is damaged; "
        f"rebuild it with `lyre index CORPUS --out {folder} --verify`"
    )


def test_a_folder_where_a_file_was_is_damage(index):
    folder, record = index
    (folder / "bm25/vocab.index.json").unlink()
    (folder / "bm25/vocab.index.json").mkdir()
    assert [(d.path, d.problem) for d in check_sizes(folder, record)] == [
        ("bm25/vocab.index.json", "not a file")
    ]


MANIFEST = Path("/idx/manifest.json")
REBUILD = "rebuild the index with `lyre index CORPUS --out /idx --overwrite`"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\xff\xfe garbage", "not a lyre manifest (not UTF-8 text)"),
        (
            b'{"format": 1, "stag',
            "not a lyre manifest (invalid JSON at line 1, column 15: Unterminated string starting at)",
        ),
        (b"[1, 2]", "not a lyre manifest (a JSON list, not an object)"),
        (b'"text"', "not a lyre manifest (a JSON str, not an object)"),
        (b'{"stages": {}}', "unknown index format None (this lyre reads format 1)"),
        (b'{"format": "1", "stages": {}}', "unknown index format '1' (this lyre reads format 1)"),
        (b'{"format": 1, "stages": []}', 'not a lyre manifest ("stages" is not an object of objects)'),
        (
            b'{"format": 1, "stages": {"bm25": 3}}',
            'not a lyre manifest ("stages" is not an object of objects)',
        ),
    ],
)
def test_garbage_manifests_are_one_line(data, problem):
    with pytest.raises(LyreError) as error:
        parse_manifest_bytes(MANIFEST, data, format_version=1)
    assert str(error.value) == f"{MANIFEST}: {problem}; {REBUILD}"


def test_a_newer_format_asks_for_an_upgrade():
    with pytest.raises(LyreError) as error:
        parse_manifest_bytes(MANIFEST, b'{"format": 9, "stages": {}}', format_version=1)
    assert str(error.value) == (
        f"{MANIFEST}: index format 9 is newer than this lyre reads (format 1); upgrade lyre, or {REBUILD}"
    )


def test_a_good_manifest_parses():
    data = json.dumps({"format": 1, "stages": {"bm25": {"complete": True}}}).encode()
    assert parse_manifest_bytes(MANIFEST, data, 1) == {"format": 1, "stages": {"bm25": {"complete": True}}}
    assert parse_manifest_bytes(MANIFEST, b'{"format": 1}', 1) == {"format": 1, "stages": {}}
