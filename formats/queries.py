"""Query files: TSV (``qid<TAB>text``), JSONL (BEIR ``_id/text``, ``qid/query``), TREC topics, Parquet.

Every problem is reported as ``file:line`` with the fix. Duplicate query ids are errors, because a run
keyed by query id would silently merge their results.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from basics.errors import InputError, LyreError
from formats.corpus import json_object
from formats.records import Query

TOPIC_FIELDS = ("title", "desc", "title+desc")
QID_FIELDS = ("_id", "qid", "query_id", "query-id", "id", "topic_id")
TEXT_FIELDS = ("text", "query", "title", "question")
_TSV_HEADER_QIDS = {"qid", "query_id", "query-id", "id", "_id", "topic", "topic_id"}
_WHITESPACE = re.compile(r"\s")
_TOPIC_TAG = re.compile(r"<(/?)(top|num|title|desc|narr)>", re.IGNORECASE)
_PREFIXES = {"num": "number:", "title": "topic:", "desc": "description:", "narr": "narrative:"}


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, data in enumerate(handle, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(path, number, "invalid UTF-8", "re-encode the file as UTF-8") from None
            yield number, line.removeprefix("\ufeff").rstrip("\r\n")


def _detect(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    for _, line in _lines(path):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.lower().startswith("<top>"):
            return "trec"
        return "jsonl" if stripped.startswith("{") else "tsv"
    raise InputError(path, None, "the query file is empty", "pass a file with one query per line")


def _checked(path: Path, line: int | None, qid: str, text: str) -> Query:
    if not qid:
        raise InputError(path, line, "query has no id", "give every query an id")
    if _WHITESPACE.search(qid):
        raise InputError(
            path, line, f"query id {qid!r} contains whitespace", "remove whitespace from query ids"
        )
    if not text.strip():
        raise InputError(path, line, f"query {qid!r} has empty text", "give the query a text or remove it")
    return Query(qid, " ".join(text.split()))


def _tsv(path: Path) -> Iterator[tuple[int, Query]]:
    first = True
    for number, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split("\t", 1)
        if first:
            first = False
            if fields[0].strip().lower() in _TSV_HEADER_QIDS:
                continue
        if len(fields) != 2:
            raise InputError(path, number, "expected qid<TAB>text", "separate the id and the text by a TAB")
        yield number, _checked(path, number, fields[0].strip(), fields[1])


def _field(record: dict[str, Any], candidates: tuple[str, ...]) -> str | None:
    return next((name for name in candidates if name in record), None)


def _jsonl(path: Path) -> Iterator[tuple[int, Query]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json_object(line)
        except ValueError as error:
            raise InputError(path, number, str(error), "fix the line") from None
        qid_name, text_name = _field(record, QID_FIELDS), _field(record, TEXT_FIELDS)
        if qid_name is None or text_name is None:
            raise InputError(
                path,
                number,
                f"no query id or text field (fields: {', '.join(record)})",
                f"use one of {'/'.join(QID_FIELDS)} and {'/'.join(TEXT_FIELDS)}",
            )
        yield number, _checked(path, number, str(record[qid_name]), str(record[text_name] or ""))


def _topic_value(tag: str, raw: str) -> str:
    value = " ".join(raw.split())
    prefix = _PREFIXES[tag]
    return value[len(prefix) :].strip() if value.lower().startswith(prefix) else value


def _trec(path: Path, topic_field: str) -> Iterator[tuple[int, Query]]:
    """Classic TREC topics: ``<top>`` blocks with ``<num>``, ``<title>``, ``<desc>``, ``<narr>`` (closing
    tags optional; ``Number:``/``Topic:``/``Description:`` prefixes removed)."""
    text = "\n".join(line for _, line in _lines(path))
    block_start: int | None = None
    fields: dict[str, str] = {}
    current: tuple[str, int] | None = None
    line, counted = 1, 0
    for match in _TOPIC_TAG.finditer(text):
        line, counted = line + text.count("\n", counted, match.start()), match.start()
        closing, tag = match.group(1), match.group(2).lower()
        if current is not None:
            fields[current[0]] = _topic_value(current[0], text[current[1] : match.start()])
            current = None
        if tag == "top" and not closing:
            block_start, fields = line, {}
        elif tag == "top" and closing:
            if block_start is None:
                raise InputError(path, line, "</top> without <top>", "fix the topic file")
            yield block_start, _topic_query(path, block_start, fields, topic_field)
            block_start = None
        elif not closing:
            if block_start is None:
                raise InputError(path, line, f"<{tag}> outside a <top> block", "fix the topic file")
            current = (tag, match.end())
    if block_start is not None:
        raise InputError(path, block_start, "<top> is never closed", "add </top>")


def _topic_query(path: Path, line: int, fields: dict[str, str], topic_field: str) -> Query:
    qid = fields.get("num", "")
    parts = ["title", "desc"] if topic_field == "title+desc" else [topic_field]
    missing = [p for p in parts if not fields.get(p)]
    if qid and missing:
        raise InputError(path, line, f"topic {qid} has no <{missing[0]}>", "pick another --topic-field")
    return _checked(path, line, qid, " ".join(fields[p] for p in parts))


def _parquet(path: Path) -> Iterator[tuple[int, Query]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = dict.fromkeys(table.column_names)
    qid_name, text_name = _field(names, QID_FIELDS), _field(names, TEXT_FIELDS)
    if qid_name is None or text_name is None:
        raise InputError(
            path, None, f"no query id or text column (columns: {', '.join(names)})", "rename them"
        )
    qids, texts = table.column(qid_name).to_pylist(), table.column(text_name).to_pylist()
    for row, (qid, text) in enumerate(zip(qids, texts, strict=True), start=1):
        yield row, _checked(path, row, "" if qid is None else str(qid), text or "")


def read_queries(
    path: str | Path, *, topic_field: str = "title", only_ids: set[str] | None = None
) -> list[Query]:
    """All queries of ``path`` in file order (only those in ``only_ids`` when given, e.g. qrels ids)."""
    path = Path(path)
    if topic_field not in TOPIC_FIELDS:
        raise LyreError(f"unknown topic field {topic_field!r}; use one of {', '.join(TOPIC_FIELDS)}")
    if not path.is_file():
        raise LyreError(f"{path}: no such query file; check the path")
    fmt = _detect(path)
    records = {"tsv": _tsv, "jsonl": _jsonl, "parquet": _parquet}.get(fmt)
    items = _trec(path, topic_field) if records is None else records(path)
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for line, query in items:
        if query.qid in seen:
            raise InputError(
                path,
                line,
                f"duplicate query id {query.qid!r} (first at line {seen[query.qid]})",
                "make ids unique",
            )
        seen[query.qid] = line
        if only_ids is None or query.qid in only_ids:
            queries.append(query)
    return queries
