import json
from collections.abc import Callable
from pathlib import Path

import pytest
from lyre.basics.errors import InputError, LyreError
from lyre.basics.provenance import sha256_file
from lyre.basics.resources import is_temp_name
from lyre.formats.records import Document
from lyre.indexes import ingest as ingest_module
from lyre.indexes.docstore import DocStore
from lyre.indexes.ingest import IngestOptions, ingest
from lyre.indexes.manifest import record_stage, stage_record


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rec(docid: str, text: str = "some text", title: str = "") -> str:
    return json.dumps({"_id": docid, "title": title, "text": text})


def test_ingest_writes_docstore_and_manifest(tmp_path):
    corpus = _write(tmp_path / "c.jsonl", [_rec("a", title="T"), _rec("b", text=""), _rec("c")])
    result = ingest(corpus, tmp_path / "idx")
    assert result.record is not None
    assert result.record.counts == {
        "documents": 3,
        "skipped": {},
        "empty_text": 1,
        "seconds": pytest.approx(0, abs=60),
    }
    store = DocStore.open(tmp_path / "idx" / "docstore")
    assert store.fetch([0, 1]) == [Document("a", "T", "some text"), Document("b", "", "")]
    record = stage_record(tmp_path / "idx", "docstore")
    assert record["counts"]["documents"] == 3 and record["params"]["format"] == "jsonl"
    assert record["params"]["corpus_sha256"] == sha256_file(corpus)
    assert record["params"]["mapping"] == {"id": "_id", "title": "title", "text": "text"}
    assert "versions" in record["provenance"]
    assert sum(file["size"] for file in record["files"].values()) == sum(
        path.stat().st_size for path in (tmp_path / "idx" / "docstore").rglob("*") if path.is_file()
    )
    assert not [p for p in (tmp_path / "idx").iterdir() if is_temp_name(p.name)]  # only the lock files
    described = "3 documents (jsonl; id=_id title=title text=text); 1 with empty text"
    assert record["summary"] == described  # no path: the record must stay true in a copy of the index
    took = result.summary.rsplit(" in ", 1)[1]
    assert result.summary == f"docstore: {described} -> {tmp_path / 'idx' / 'docstore'} in {took}"


def test_duplicate_id_fails_at_its_line_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 2)
    corpus = _write(tmp_path / "c.jsonl", [_rec("a"), _rec("b"), _rec("c"), _rec("d"), _rec("b")])
    with pytest.raises(InputError) as error:
        ingest(corpus, tmp_path / "idx")
    assert str(error.value).startswith(f"{corpus}:5: duplicate id 'b' (already the id of document 2)")
    assert not (tmp_path / "idx" / "docstore").exists()
    assert stage_record(tmp_path / "idx", "docstore") is None


def test_earliest_problem_is_reported_first(tmp_path):
    corpus = _write(tmp_path / "c.jsonl", [_rec("a"), _rec("a"), _rec("b"), "{broken"])
    with pytest.raises(InputError, match=r"c\.jsonl:2: duplicate id 'a'"):
        ingest(corpus, tmp_path / "idx")


def test_skip_counts_each_kind_and_keeps_empty_text(tmp_path):
    lines = [_rec("a"), _rec("a"), "{broken", _rec("x y"), json.dumps({"text": "no id"}), _rec("e", text=" ")]
    corpus = _write(tmp_path / "c.jsonl", lines)
    counts = ingest(corpus, tmp_path / "idx", IngestOptions(on_error="skip")).record.counts
    assert counts["documents"] == 2 and counts["empty_text"] == 1
    assert counts["skipped"] == {"duplicate_id": 1, "malformed": 1, "missing_id": 1, "whitespace_id": 1}
    assert DocStore.open(tmp_path / "idx").docids() == ["a", "e"]


def test_failed_overwrite_keeps_the_complete_docstore(tmp_path):
    good = _write(tmp_path / "good.jsonl", [_rec("a"), _rec("b")])
    ingest(good, tmp_path / "idx")
    bm25 = {"k1": 0.9, "b": 0.4, "method": "lucene", "delta": 0.5, "analyzer": {}}
    counts = {"documents": 2, "vocabulary": 2, "postings": 2}
    record_stage(tmp_path / "idx", "bm25", {"summary": "built on a, b", "params": bm25, "counts": counts})
    assert ingest(good, tmp_path / "idx").summary.startswith("docstore: up to date (2 documents")
    bad = _write(tmp_path / "bad.jsonl", [_rec("z"), "{broken"])
    with pytest.raises(LyreError, match=r"another corpus .* set overwrite"):
        ingest(bad, tmp_path / "idx")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: malformed JSON"):
        ingest(bad, tmp_path / "idx", IngestOptions(overwrite=True))
    assert DocStore.open(tmp_path / "idx").docids() == ["a", "b"]
    assert stage_record(tmp_path / "idx", "docstore")["counts"]["documents"] == 2
    assert stage_record(tmp_path / "idx", "bm25") is not None
    ingest(_write(tmp_path / "new.jsonl", [_rec("n")]), tmp_path / "idx", IngestOptions(overwrite=True))
    assert DocStore.open(tmp_path / "idx").docids() == ["n"]
    assert stage_record(tmp_path / "idx", "bm25") is None  # built on the old rows: no longer valid


def test_empty_corpus_is_an_error(tmp_path):
    corpus = _write(tmp_path / "c.jsonl", [_rec("a b")])
    with pytest.raises(InputError, match="no documents were read"):
        ingest(corpus, tmp_path / "idx", IngestOptions(on_error="skip"))


@pytest.mark.parametrize(("name", "count"), [("scifact", 5183), ("nfcorpus", 3633)])
def test_shared_beir_collections(
    tmp_path: Path, shared_collection: Callable[[str], Path], name: str, count: int
) -> None:
    collection = shared_collection(name)
    counts = ingest(collection, tmp_path / name).record.counts
    assert (counts["documents"], counts["skipped"], counts["empty_text"]) == (count, {}, 0)
    store = DocStore.open(tmp_path / name)
    first = json.loads((collection / "corpus.jsonl").open(encoding="utf-8").readline())
    assert store.fetch([0])[0] == Document(first["_id"], first["title"], first["text"])
    assert store.rows_of([first["_id"]]).tolist() == [0]
