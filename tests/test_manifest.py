"""The index manifest: stages recorded last, cleared first, invalidated with what derives from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from lyre.basics.errors import LyreError
from lyre.indexes.manifest import invalidate, record_stage, require_stage, stage_record


def built(index: Path) -> Path:
    for stage in ("docstore", "bm25", "embeddings", "dense"):
        (index / stage).mkdir(parents=True)
        (index / stage / "file").write_text(stage)
        record_stage(index, stage, {"n": 1})
    return index


def test_require_stage_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(LyreError, match="not a lyre index"):
        require_stage(tmp_path, "docstore")
    record_stage(tmp_path, "docstore", {"documents": 3})
    assert require_stage(tmp_path, "docstore") == {"complete": True, "documents": 3}
    with pytest.raises(LyreError, match="dense stage is missing or incomplete; run `lyre index CORPUS"):
        require_stage(tmp_path, "dense")


def test_invalidating_embeddings_drops_the_dense_stage_and_its_files(tmp_path: Path) -> None:
    index = built(tmp_path / "index")
    invalidate(index, "embeddings")
    assert stage_record(index, "embeddings") is None and stage_record(index, "dense") is None
    assert not (index / "dense").exists()
    assert (index / "embeddings" / "file").exists()  # its own files are the rewriter's to replace
    assert stage_record(index, "bm25") is not None and stage_record(index, "docstore") is not None


def test_invalidating_the_docstore_drops_every_derived_stage(tmp_path: Path) -> None:
    index = built(tmp_path / "index")
    invalidate(index, "docstore")
    assert all(stage_record(index, stage) is None for stage in ("docstore", "bm25", "embeddings", "dense"))
    visible = sorted(path.name for path in index.iterdir() if not path.name.startswith("."))
    assert visible == ["docstore", "manifest.json"]  # beside the lock files


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00\xff garbage", "not UTF-8 text"),
        (b"{garbage", "invalid JSON at line 1, column 2"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"format": 9}', "format 9 is newer than this lyre reads"),
        (b'{"format": "two", "stages": {}}', "unknown index format 'two'"),
    ],
)
def test_a_damaged_or_foreign_manifest_is_one_line_naming_the_rebuild(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(LyreError, match=problem) as error:
        stage_record(tmp_path, "docstore")
    assert "--overwrite" in str(error.value) and "\n" not in str(error.value)
