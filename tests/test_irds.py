"""``irds:`` ids through a local ir_datasets home prepared from ../shared/data (no download).

ir_datasets keeps BEIR's downloaded archive at ``IR_DATASETS_HOME/beir/<name>/source.zip`` and reads it
when present (it checks the md5 only while downloading), so the fixture writes that archive from the
shared SciFact files. ir_datasets fixes its BEIR folder when it is imported: the fixture imports it fresh
after setting the home, and removes it again afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LyreCli

from basics.errors import LyreError
from basics.provenance import sha256_file
from formats.corpus import open_corpus
from formats.irds import source_record
from formats.qrels import read_qrels
from formats.queries import read_queries

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def _forget_ir_datasets() -> None:
    for name in [m for m in sys.modules if m == "ir_datasets" or m.startswith("ir_datasets.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def irds_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ir_datasets_home")
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as archive:
        for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
            archive.write(SCIFACT / name, f"scifact/{name}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IR_DATASETS_HOME", str(home))
        patch.setenv("IR_DATASETS_DL_TRIES", "1")
        patch.setenv("IR_DATASETS_DL_TIMEOUT", "3")
        _forget_ir_datasets()
        yield home
    _forget_ir_datasets()


def test_qrels_and_queries_equal_the_files_they_came_from(irds_home: Path) -> None:
    qrels = read_qrels("irds:beir/scifact/test")
    assert qrels == read_qrels(SCIFACT / "qrels" / "test.tsv")
    judged = {q.qid for q in qrels}
    assert read_queries("irds:beir/scifact/test") == read_queries(SCIFACT / "queries.jsonl", only_ids=judged)
    train = read_queries("irds:beir/scifact/train", only_ids={"0", "1"})
    assert [q.qid for q in train] == ["0"]  # query 1 is a test query, filtered out by the train subset


def test_corpus_reads_like_the_beir_folder_and_provenance_hashes_what_was_read(irds_home: Path) -> None:
    reader = open_corpus("irds:beir/scifact")
    assert reader.format == "jsonl" and reader.mapping.to_dict() == {
        "id": "_id",
        "title": "title",
        "text": "text",
    }
    assert list(reader) == list(open_corpus(SCIFACT))
    record = source_record("irds:beir/scifact", "docs")
    assert record["irds"] == "beir/scifact" and record["records"] == 5183
    assert record["sha256"] == sha256_file(reader.path)
    import ir_datasets

    qrels = source_record("irds:beir/scifact/test", "qrels")
    lines = "".join(
        f"{q.qid}\t{q.docid}\t{q.relevance}\n" for q in read_qrels(SCIFACT / "qrels" / "test.tsv")
    )
    assert qrels == {
        "irds": "beir/scifact/test",
        "ir_datasets": ir_datasets.__version__,
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "records": 339,
    }
    assert source_record(SCIFACT / "qrels" / "test.tsv", "qrels")["sha256"] == sha256_file(
        SCIFACT / "qrels" / "test.tsv"
    )


def test_unknown_ids_and_data_not_here_are_one_line_errors(irds_home: Path) -> None:
    with pytest.raises(LyreError, match="no such dataset"):
        read_qrels("irds:beir/no-such-set")
    with pytest.raises(LyreError, match="has no qrels"):
        read_qrels("irds:beir/scifact")
    with pytest.raises(LyreError) as missing:
        read_qrels("irds:beir/nfcorpus/test")  # not in the prepared home; nothing can be downloaded here
    message = str(missing.value)
    assert "\n" not in message and "ir_datasets export beir/nfcorpus/test qrels" in message
    assert str(irds_home) in message


def test_an_irds_corpus_is_recorded_by_its_id_and_quiet_silences_ir_datasets(
    irds_home: Path, lyre: LyreCli, tmp_path: Path
) -> None:
    def fresh_home(name: str) -> dict[str, str]:
        """A new ir_datasets home with the prepared archive: ir_datasets reads it, and logs it does."""
        home = tmp_path / name / "beir" / "scifact"
        home.mkdir(parents=True)
        shutil.copy(irds_home / "beir" / "scifact" / "source.zip", home)
        return {**os.environ, "IR_DATASETS_HOME": str(tmp_path / name), "IR_DATASETS_DL_TRIES": "1"}

    index = tmp_path / "index"
    result = lyre("-q", "ingest", "irds:beir/scifact", "--out", index, env=fresh_home("quiet"))
    assert result.stderr == ""  # neither lyre's lines nor ir_datasets' [INFO] lines
    params = json.loads((index / "manifest.json").read_text())["stages"]["docstore"]["params"]
    assert params["corpus"] == "irds:beir/scifact"
    assert params["corpus_source"] == source_record("irds:beir/scifact", "docs")
    assert params["corpus_source"]["records"] == 5183
    noisy = lyre("ingest", "irds:beir/scifact", "--out", tmp_path / "again", env=fresh_home("noisy"))
    assert "[INFO]" in noisy.stderr  # what --quiet silenced is there without it
