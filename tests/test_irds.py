"""``irds:`` ids through a local ir_datasets home prepared from the bundled sample (no download).

ir_datasets keeps BEIR's downloaded archive at ``IR_DATASETS_HOME/beir/<name>/source.zip`` and reads it
when present (it checks the md5 only while downloading), so the fixture writes that archive in SciFact's
layout from ``data/sample`` (its queries judged in ``qrels/test.tsv``, the first one also in
``qrels/train.tsv``): the tests need nothing beside the repository. ir_datasets fixes its BEIR folder
when it is imported: the fixture imports it fresh after setting the home, and removes it again afterwards.
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
from helpers import SAMPLE, LyreCli
from lyre.basics.errors import LyreError
from lyre.basics.provenance import sha256_file
from lyre.formats.corpus import open_corpus
from lyre.formats.irds import source_record
from lyre.formats.qrels import read_qrels
from lyre.formats.queries import read_queries

FIRST_QUERY = "Q01"
"""The sample's query that the prepared ``train`` split judges (every query is in ``test``)."""


def beir_folder(folder: Path) -> Path:
    """The bundled sample written as a BEIR folder (SciFact's file names and columns) in ``folder``."""
    (folder / "qrels").mkdir(parents=True)
    shutil.copy(SAMPLE / "corpus.jsonl", folder / "corpus.jsonl")
    queries = [line.split("\t", 1) for line in (SAMPLE / "queries.tsv").read_text().splitlines()]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for qid, text in queries:
            handle.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    judged = [line.split() for line in (SAMPLE / "qrels.tsv").read_text().splitlines()]
    for split, rows in (("test", judged), ("train", [row for row in judged if row[0] == FIRST_QUERY])):
        lines = "".join(f"{qid}\t{docid}\t{grade}\n" for qid, _, docid, grade in rows)
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    return folder


@pytest.fixture(scope="module")
def beir_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return beir_folder(tmp_path_factory.mktemp("beir") / "scifact")


def _forget_ir_datasets() -> None:
    for name in [m for m in sys.modules if m == "ir_datasets" or m.startswith("ir_datasets.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def irds_home(tmp_path_factory: pytest.TempPathFactory, beir_sample: Path) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ir_datasets_home")
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as archive:
        for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
            archive.write(beir_sample / name, f"scifact/{name}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IR_DATASETS_HOME", str(home))
        patch.setenv("IR_DATASETS_DL_TRIES", "1")
        patch.setenv("IR_DATASETS_DL_TIMEOUT", "3")
        _forget_ir_datasets()
        yield home
    _forget_ir_datasets()


def test_qrels_and_queries_equal_the_files_they_came_from(irds_home: Path, beir_sample: Path) -> None:
    qrels = read_qrels("irds:beir/scifact/test")
    assert qrels == read_qrels(beir_sample / "qrels" / "test.tsv")
    judged = {q.qid for q in qrels}
    assert read_queries("irds:beir/scifact/test") == read_queries(
        beir_sample / "queries.jsonl", only_ids=judged
    )
    train = read_queries("irds:beir/scifact/train", only_ids={FIRST_QUERY, "Q02"})
    assert [q.qid for q in train] == [FIRST_QUERY]  # Q02 is judged in test only: not a train query


def test_corpus_reads_like_the_beir_folder_and_provenance_hashes_what_was_read(
    irds_home: Path, beir_sample: Path
) -> None:
    reader = open_corpus("irds:beir/scifact")
    assert reader.format == "jsonl" and reader.mapping.to_dict() == {
        "id": "_id",
        "title": "title",
        "text": "text",
    }
    documents = list(open_corpus(beir_sample))
    assert list(reader) == documents
    record = source_record("irds:beir/scifact", "docs")
    assert record["irds"] == "beir/scifact" and record["records"] == len(documents) == 120
    assert record["sha256"] == sha256_file(reader.path)
    import ir_datasets

    qrels = source_record("irds:beir/scifact/test", "qrels")
    lines = "".join(
        f"{q.qid}\t{q.docid}\t{q.relevance}\n" for q in read_qrels(beir_sample / "qrels" / "test.tsv")
    )
    assert qrels == {
        "irds": "beir/scifact/test",
        "ir_datasets": ir_datasets.__version__,
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "records": len(read_qrels(SAMPLE / "qrels.tsv")),
    }
    assert source_record(beir_sample / "qrels" / "test.tsv", "qrels")["sha256"] == sha256_file(
        beir_sample / "qrels" / "test.tsv"
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


@pytest.mark.slow
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
    assert params["corpus_source"]["records"] == 120
    noisy = lyre("ingest", "irds:beir/scifact", "--out", tmp_path / "again", env=fresh_home("noisy"))
    assert "[INFO]" in noisy.stderr  # what --quiet silenced is there without it


@pytest.mark.parametrize(
    "read", [read_queries, read_qrels, open_corpus, lambda source: source_record(source, "qrels")]
)
def test_an_irds_prefix_without_an_id_is_shown_as_typed(read) -> None:
    with pytest.raises(LyreError) as caught:
        read("irds:")
    assert str(caught.value).startswith("'irds:' names no dataset; write the id after irds:, e.g. ")
    assert "irds:irds" not in str(caught.value)


def test_the_command_line_shows_an_irds_id_as_typed(lyre: LyreCli) -> None:
    result = lyre("-q", "eval", "irds:", SAMPLE / "qrels.tsv", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: 'irds:' names no dataset") and "irds:irds" not in result.stderr
