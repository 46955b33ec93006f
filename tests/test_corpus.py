import gzip
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lyre.basics.errors import InputError, LyreError
from lyre.formats import corpus
from lyre.formats.corpus import FieldMapping, UniqueIds, detect_format, id_hashes, open_corpus
from lyre.formats.records import Document

DOCS = [
    Document("d1", "Title one", "first text"),
    Document("d2", "", "second ünïcode"),
    Document("7", "T3", ""),
]


def _jsonl(path: Path, records: list[dict], gz: bool = False) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _read(path: Path, **kwargs) -> tuple[list[Document], FieldMapping]:
    reader = open_corpus(path, **kwargs)
    return list(reader), reader.mapping


def test_beir_jsonl_and_gz_round_trip(tmp_path):
    records = [{"_id": d.docid, "title": d.title, "text": d.text, "metadata": {}} for d in DOCS]
    for name, gz in (("c.jsonl", False), ("c.jsonl.gz", True)):
        docs, mapping = _read(_jsonl(tmp_path / name, records, gz))
        assert docs == DOCS
        assert mapping == FieldMapping("_id", "title", "text")


@pytest.mark.parametrize(
    ("id_key", "text_key"), [("id", "contents"), ("docid", "body"), ("doc_id", "text"), ("_id", "body")]
)
def test_jsonl_field_variants(tmp_path, id_key, text_key):
    path = _jsonl(tmp_path / "c.jsonl", [{id_key: d.docid, text_key: d.text} for d in DOCS])
    docs, mapping = _read(path)
    assert docs == [Document(d.docid, "", d.text) for d in DOCS]
    assert mapping == FieldMapping(id_key, None, text_key)


def test_numeric_json_ids_become_strings(tmp_path):
    docs, _ = _read(_jsonl(tmp_path / "c.jsonl", [{"_id": 12, "text": "x"}]))
    assert docs == [Document("12", "", "x")]


def test_overrides_win_and_unknown_override_names_fields(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"pid": "a", "passage": "p", "text": "t", "headline": "h"}])
    docs, mapping = _read(path, text_field="passage", title_field="headline")
    assert docs == [Document("a", "h", "p")]
    assert mapping == FieldMapping("pid", "headline", "passage")
    with pytest.raises(
        InputError, match=r"c\.jsonl:1: no text field 'body' \(fields: pid, passage, text, headline\)"
    ):
        open_corpus(path, text_field="body")


def test_unguessable_id_field_asks_for_flag(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"key": "a", "text": "t"}])
    with pytest.raises(InputError, match="pass id_field NAME") as error:
        open_corpus(path)
    assert error.value.options() == ["id_field"]  # the CLI shows it as the running command's flag


def test_tsv_two_three_columns_header_and_gz(tmp_path):
    (tmp_path / "two.tsv").write_text("0\tThe presence of\n1\tsecond part\n", encoding="utf-8")
    docs, mapping = _read(tmp_path / "two.tsv")
    assert mapping == FieldMapping("1", None, "2")  # MS MARCO collection.tsv: two columns
    assert docs == [Document("0", "", "The presence of"), Document("1", "", "second part")]

    lines = "".join(f"{d.docid}\t{d.title}\t{d.text}\n" for d in DOCS)
    (tmp_path / "three.tsv").write_text(lines, encoding="utf-8")
    docs, mapping = _read(tmp_path / "three.tsv")
    assert docs == DOCS
    assert mapping == FieldMapping("1", "2", "3")

    (tmp_path / "head.tsv.gz").write_bytes(gzip.compress(("id\ttitle\ttext\n" + lines).encode()))
    docs, mapping = _read(tmp_path / "head.tsv.gz")
    assert docs == DOCS
    assert mapping == FieldMapping("id", "title", "text")


def test_tsv_wrong_column_count_is_located(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("a\tt\tx\nb\tonly-two\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        list(open_corpus(path))
    assert str(error.value).startswith(f"{path}:2: expected 3 TAB-separated fields, found 2;")


def test_parquet_round_trip(tmp_path):
    table = pa.table(
        {"doc_id": [d.docid for d in DOCS], "title": [d.title for d in DOCS], "body": [d.text for d in DOCS]}
    )
    pq.write_table(table, tmp_path / "c.parquet")
    docs, mapping = _read(tmp_path / "c.parquet")
    assert docs == DOCS
    assert mapping == FieldMapping("doc_id", "title", "body")


def test_beir_folder_reads_corpus_jsonl(tmp_path):
    _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "title": "", "text": "x"}])
    (tmp_path / "qrels").mkdir()
    reader = open_corpus(tmp_path)
    assert reader.path == tmp_path / "corpus.jsonl"
    assert list(reader) == [Document("a", "", "x")]
    with pytest.raises(LyreError, match=r"folder has no corpus\.jsonl"):
        open_corpus(tmp_path / "qrels")


def test_format_guessed_from_content(tmp_path):
    (tmp_path / "a").write_text('{"_id": "x", "text": "y"}\n', encoding="utf-8")
    (tmp_path / "b").write_text("x\ty\n", encoding="utf-8")
    (tmp_path / "c").write_bytes(gzip.compress(b'{"_id": "x", "text": "y"}\n'))
    assert [detect_format(tmp_path / n) for n in "abc"] == ["jsonl", "tsv", "jsonl.gz"]


BAD_LINES = {
    "malformed": ('{"_id": "b", "text": ', "malformed JSON"),
    "invalid_utf8": (b'{"_id": "b", "text": "caf\xe9"}', "invalid UTF-8"),
    "missing_id": ('{"text": "no id"}', "record has no id"),
    "whitespace_id": ('{"_id": "b c", "text": "x"}', "id 'b c' contains whitespace"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_record_fails_at_its_line_or_is_skipped(tmp_path, kind):
    bad, message = BAD_LINES[kind]
    bad = bad if isinstance(bad, bytes) else bad.encode()
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "x"}\n\n' + bad + b'\n{"_id": "z", "text": "y"}\n')
    with pytest.raises(InputError) as error:
        list(open_corpus(path))
    assert str(error.value).startswith(f"{path}:3: {message}")
    assert "on_error skip" in str(error.value)
    reader = open_corpus(path, on_error="skip")
    assert [d.docid for d in reader] == ["a", "z"]
    assert reader.skipped == {kind: 1}


def test_batches_yield_earlier_records_before_an_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{bad\n', encoding="utf-8")
    batches = open_corpus(path).batches(batch_size=100)
    assert [line for line, _ in next(batches)] == [1, 2]
    with pytest.raises(InputError, match=":3: malformed JSON"):
        next(batches)


def _reference_hash(text: str) -> int:
    """FNV-1a 64 + splitmix64 finaliser, written out in plain Python."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def test_id_hashes_match_reference_and_ignore_batch_width():
    ids = ["a", "MED-10", "ünï", "x" * 50]
    assert id_hashes(ids).tolist() == [_reference_hash(i) for i in ids]
    assert id_hashes(["a"])[0] == id_hashes(["a", "a-much-longer-id"])[0]
    assert id_hashes([]).dtype == np.uint64


def test_unique_ids_within_and_across_batches():
    stored: list[str] = []
    unique = UniqueIds(lambda rows: [stored[r] for r in rows])
    first = ["a", "b", "a", "c"]
    earlier = unique.check(first, first_row=0)
    assert earlier.tolist() == [-1, -1, 0, -1]
    stored += ["a", "b", "c"]
    for start in range(3, 40, 3):  # many small batches force level merges
        batch = [f"id{start}", f"id{start + 1}", f"id{start + 2}"]
        assert unique.check(batch, first_row=len(stored)).tolist() == [-1, -1, -1]
        stored += batch
    assert unique.check(["c", "new", "id9"], first_row=len(stored)).tolist() == [2, -1, stored.index("id9")]
    assert len(unique) == len(stored) + 1
    hashes, rows = unique.sorted_index()
    assert np.all(np.diff(hashes.astype(np.float64)) >= 0) and sorted(rows.tolist()) == list(
        range(len(stored) + 1)
    )


def test_unique_ids_confirm_hash_collisions(monkeypatch):
    monkeypatch.setattr(corpus, "id_hashes", lambda ids: np.zeros(len(ids), dtype=np.uint64))
    stored = ["a", "b"]
    unique = UniqueIds(lambda rows: [stored[r] for r in rows])
    assert unique.check(["a", "b"], 0).tolist() == [-1, -1]
    # Every id collides; only the real duplicate is reported.
    assert unique.check(["c", "b"], 2).tolist() == [-1, 1]


@pytest.mark.parametrize(("lines", "found"), [("a\tt\tx\nb\tt\tx\textra\n", 4), ("a\tx\nb\tx\tglued\n", 3)])
def test_tsv_line_with_extra_columns_is_an_error_saying_how_to_map_columns(tmp_path, lines, found):
    path = tmp_path / "c.tsv"
    path.write_text(lines, encoding="utf-8")
    with pytest.raises(InputError) as error:
        list(open_corpus(path))
    assert str(error.value) == (
        f"{path}:2: expected {found - 1} TAB-separated fields, found {found}; "
        "remove the TABs inside the text, or map columns with id_field/title_field/text_field "
        "(column numbers, 1-based, as in cut -f), or pass on_error skip to skip such records"
    )
    assert [d.docid for d in open_corpus(path, on_error="skip")] == ["a"]


def test_tsv_extra_columns_through_the_cli_name_the_flags(tmp_path, lyre):
    path = tmp_path / "c.tsv"
    path.write_text("a\tt\tx\nb\tt\tx\textra\n", encoding="utf-8")
    result = lyre("--quiet", "ingest", path, "--out", tmp_path / "index", check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {path}:2: expected 3 TAB-separated fields, found 4; remove the TABs inside the text, or map "
        "columns with --id-field/--title-field/--text-field (column numbers, 1-based, as in cut -f), "
        "or pass --on-error skip to skip such records\n"
    )


def test_list_valued_text_is_an_error_not_its_python_repr(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "x"}, {"_id": "b", "text": ["p1", "p2"]}])
    with pytest.raises(InputError) as error:
        list(open_corpus(path))
    assert str(error.value) == (
        f"{path}:2: the text field 'text' is a list, not a string; join it into one string first "
        """(e.g. jq -c '.text |= join(" ")'), map another field with text_field, """
        "or pass on_error skip to skip such records"
    )
    reader = open_corpus(path, on_error="skip")
    assert list(reader) == [Document("a", "", "x")]
    assert reader.skipped == {"non_text_field": 1}
    objects = _jsonl(tmp_path / "o.jsonl", [{"_id": "a", "title": {"en": "t"}, "text": "x"}])
    with pytest.raises(InputError, match=r"o\.jsonl:1: the title field 'title' is a object, not a string"):
        list(open_corpus(objects))


def test_list_valued_parquet_column_is_an_error(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": [["p1", "p2"]]}), tmp_path / "c.parquet")
    with pytest.raises(InputError, match=r"c\.parquet:1: the text field 'text' is a list, not a string"):
        list(open_corpus(tmp_path / "c.parquet"))


def _gz_corpus(path: Path, documents: int = 3000) -> bytes:
    """A gzipped JSONL corpus whose lines differ (so the compressed stream is long); returns the text."""
    text = "".join(
        json.dumps({"_id": f"d{i}", "text": f"document {i} {i * 7919 % 10007}"}) + "\n"
        for i in range(documents)
    )
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return text.encode()


def test_truncated_gz_names_the_file_and_the_line_reached(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    _gz_corpus(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    readable = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    line = readable.count(b"\n") + 1  # the first line the truncation cut
    reader = open_corpus(path)
    read = []
    with pytest.raises(InputError) as error:
        for batch in reader.batches(100):
            read.extend(doc for _, doc in batch)
    assert str(error.value) == (
        f"{path}:{line}: the gzip data ends early (the file is truncated); "
        f"copy or download the file again (`gzip -t {path}` tests it)"
    )
    assert len(read) == line - 1  # every complete line before it was read


def test_truncated_gz_through_the_cli_is_one_line_exit_2(tmp_path, lyre):
    path = tmp_path / "c.jsonl.gz"
    _gz_corpus(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    line = zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n") + 1
    result = lyre("--quiet", "ingest", path, "--out", tmp_path / "index", check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {path}:{line}: the gzip data ends early (the file is truncated); "
        f"copy or download the file again (`gzip -t {path}` tests it)\n"
    )


def test_a_file_named_gz_that_is_not_gzip(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl.gz", [{"_id": "a", "text": "x"}])  # plain text, .gz name
    with pytest.raises(InputError) as error:
        open_corpus(path)
    assert str(error.value) == (
        f"{path}:1: not gzip data, although the file is read as .gz; "
        "rename it without .gz, or compress it with gzip"
    )


def test_gz_corrupted_mid_stream_names_the_line_reached(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    text = _gz_corpus(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # a zeroed block inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}:\d+: "):  # garbage, or the gzip check
        list(open_corpus(path))
    with pytest.raises(InputError) as error:  # skipping the garbage lines, the gzip check still stops it
        list(open_corpus(path, on_error="skip"))
    match = re.fullmatch(
        rf"{re.escape(str(path))}:(\d+): corrupt gzip data \((.+)\); copy or download .*", str(error.value)
    )
    assert match is not None, str(error.value)
    assert 1 < int(match.group(1)) <= text.count(b"\n")
