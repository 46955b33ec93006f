"""The index manifest: stages recorded last, cleared first, invalidated with what derives from them; read
into typed records, a manifest of the wrong shape refused in one line naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import change_at
from lyre.basics.errors import LyreError
from lyre.indexes.manifest import (
    Manifest,
    StageFolder,
    invalidate,
    load_manifest,
    parse_manifest,
    record_stage,
    require_stage,
    stage_record,
)
from lyre.indexes.metadata import FileEntry, MetadataError, ShapeError, StageRecord
from lyre.models.recipes import builtin_recipe

PARAMS = {
    "docstore": ({"corpus": "/data/c.jsonl"}, {"documents": 3}),
    "bm25": ({"k1": 0.9, "b": 0.4, "method": "lucene", "delta": 0.5, "analyzer": {}}, {
        "documents": 3, "vocabulary": 5, "postings": 7,
    }),
    "embeddings": (
        {"model": "m", "recipe": builtin_recipe("lychee-embed").to_dict(), "dim": 8}, {"documents": 3}
    ),
    "dense": ({"index_type": "flat"}, {}),
}  # fmt: skip
"""For each stage, the least params and counts a record of it holds: what lyre reads of them."""


def record_of(stage: str, **files: FileEntry) -> StageRecord:
    params, counts = PARAMS[stage]
    return StageRecord(f"{stage} of 3 documents", params, counts, files=files)


def built(index: Path) -> Path:
    for stage in ("docstore", "bm25", "embeddings", "dense"):
        (index / stage).mkdir(parents=True)
        (index / stage / "file").write_text(stage)
        record_stage(index, stage, record_of(stage))
    return index


def test_require_stage_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(LyreError, match="not a lyre index"):
        require_stage(tmp_path, "docstore")
    record_stage(tmp_path, "docstore", record_of("docstore").to_dict())
    assert require_stage(tmp_path, "docstore") == {"complete": True, **record_of("docstore").to_dict()}
    with pytest.raises(LyreError, match="dense stage is missing or incomplete; run `lyre index CORPUS"):
        require_stage(tmp_path, "dense")


def test_a_record_of_the_wrong_shape_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"bm25\.params\.analyzer is missing"):
        record_stage(
            tmp_path, "bm25", {"summary": "s", "params": {"k1": 0.9, "b": 0.4, "method": "x", "delta": 0}}
        )
    with pytest.raises(ShapeError, match=r"^summary is missing"):
        record_stage(tmp_path, "docstore", {"documents": 3})
    assert not (tmp_path / "manifest.json").exists()


def test_the_typed_manifest_reads_back_what_was_recorded(tmp_path: Path) -> None:
    entry = FileEntry(5, "ab" * 32)
    record_stage(tmp_path, "docstore", record_of("docstore", **{"docstore/docstore.json": entry}))
    manifest = load_manifest(tmp_path)
    assert manifest == Manifest(
        stages={"docstore": record_of("docstore", **{"docstore/docstore.json": entry})}
    )
    assert manifest.stages["docstore"].files["docstore/docstore.json"] == entry
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest.to_dict()


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


MANIFEST = Path("/idx/manifest.json")
REPAIR = "rebuild the index with `lyre index CORPUS --out /idx --verify`"


STAGE = ("stages", "docstore")
ENTRY = (*STAGE, "files", "docstore/docstore.json")


def _manifest(*changes: tuple[tuple[str, ...], object]) -> bytes:
    """A manifest of one valid docstore stage, each change (the keys leading to a value, the new value,
    or KeyError to delete it) applied."""
    value = {"format": 3, "stages": {"docstore": {"complete": True, **record_of("docstore").to_dict()}}}
    value["stages"]["docstore"]["files"] = {"docstore/docstore.json": {"size": 5, "sha256": "ab" * 32}}
    for path, new in changes:
        change_at(value, path, new)
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"\x00\xff\xfe garbage", "not UTF-8 text (damaged)"),
        (b'{"format": 3, "stag', "not valid JSON (line 1, column 15: Unterminated string starting at)"),
        (b"[1, 2]", "not a lyre manifest (a list, not an object)"),
        (b'{"stages": {}}', "unknown index format None (this lyre reads format 3)"),
        (b'{"format": "3", "stages": {}}', "unknown index format '3' (this lyre reads format 3)"),
        (b'{"format": 3, "stages": []}', "stages is a list, not an object"),
        (b'{"format": 3, "stages": {"bm25": 3}}', 'stages["bm25"] is a number (3), not an object'),
        (_manifest(((*STAGE, "files"), None)), "stages.docstore.files is null, not an object"),
        (
            _manifest(((*ENTRY, "size"), "big")),
            'stages.docstore.files["docstore/docstore.json"].size is a string ("big"), not an integer',
        ),
        (_manifest(((*STAGE, "params"), [])), "stages.docstore.params is a list, not an object"),
        (_manifest(((*STAGE, "summary"), KeyError)), "stages.docstore.summary is missing"),
        (_manifest(((*STAGE, "counts"), {})), "stages.docstore.counts.documents is missing"),
        (_manifest(((*STAGE, "complete"), "yes")), "stages.docstore.complete is a string"),
        (
            _manifest(((*STAGE, "counts", "documents"), True)),
            "stages.docstore.counts.documents is true, not an integer",
        ),
        (
            _manifest(((*ENTRY, "size"), -1)),
            'stages.docstore.files["docstore/docstore.json"] is inconsistent (size -1 is negative)',
        ),
        (_manifest((("stages", "bm2"), {"complete": True})), "stages.bm2 is not a stage of a lyre index"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_one_line(data: bytes, problem: str) -> None:
    with pytest.raises(MetadataError) as error:
        parse_manifest(MANIFEST, data)
    message = str(error.value)
    assert message.startswith(f"{MANIFEST}: {problem}") and message.endswith(f"; {REPAIR}"), message
    assert "\n" not in message


def test_a_newer_format_asks_for_an_upgrade() -> None:
    with pytest.raises(LyreError) as error:
        parse_manifest(MANIFEST, b'{"format": 9, "stages": {}}')
    assert str(error.value) == (
        f"{MANIFEST}: index format 9 is newer than this lyre reads (format 3); upgrade lyre, or rebuild "
        "the index with `lyre index CORPUS --out /idx --overwrite`"
    )


def test_a_good_manifest_parses_and_incomplete_stages_are_left_out() -> None:
    assert parse_manifest(MANIFEST, _manifest()).stages["docstore"].counts == {"documents": 3}
    assert parse_manifest(MANIFEST, _manifest(((*STAGE, "complete"), False))).stages == {}
    assert parse_manifest(MANIFEST, b'{"format": 3}') == Manifest()


def test_a_stage_folder_knows_its_recorded_files_and_the_repair(tmp_path: Path) -> None:
    entry = FileEntry(5, "ab" * 32)
    record_stage(tmp_path, "docstore", record_of("docstore", **{"docstore/docstore.json": entry}))
    folder = StageFolder.locate(tmp_path / "docstore")
    assert folder.files == {"docstore/docstore.json": entry}
    assert folder.repair == (
        f"the docstore stage is damaged; rebuild it with `lyre index /data/c.jsonl --out {tmp_path} --verify`"
    )
    unfinished = StageFolder.locate(tmp_path / "bm25")
    assert unfinished.files == {} and unfinished.repair == (
        f"the bm25 stage was not finished; remove {tmp_path / 'bm25'} and run the command again"
    )
