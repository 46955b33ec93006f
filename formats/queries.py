"""Query files: TSV (``qid<TAB>text``), JSONL (BEIR ``_id/text``, ``qid/query``), TREC topics, Parquet.

TREC topics come in two shapes: classic SGML (``<top>`` blocks, TREC 1-8, Robust) and XML (``<topic
number="..." type="...">`` with ``<query>``, ``<question>``/``<description>``, ``<narrative>``, as the
Web tracks and TREC-COVID distribute them). The topic field option reads either: ``title`` is the short
query (``<title>`` or ``<query>``), ``desc`` the sentence (``<desc>``, ``<question>`` or
``<description>``), ``title+desc`` both.

Every problem is reported as ``file:line`` with the fix. Duplicate query ids are errors, because a run
keyed by query id would silently merge their results.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lyre.basics.errors import InputError, LyreError, opt
from lyre.formats.corpus import GZIP_ERRORS, gzip_error, json_object
from lyre.formats.irds import irds_id, read_irds_queries
from lyre.formats.records import Query

TOPIC_FIELDS = ("title", "desc", "title+desc")
QID_FIELDS = ("_id", "qid", "query_id", "query-id", "id", "topic_id")
TEXT_FIELDS = ("text", "query", "title", "question")
_TSV_HEADER_QIDS = {"qid", "query_id", "query-id", "id", "_id", "topic", "topic_id"}
_WHITESPACE = re.compile(r"\s")
_TOPIC_TAG = re.compile(r"<(/?)(top|num|title|desc|narr)>", re.IGNORECASE)
_SGML_FIELDS = {"title": ("title",), "desc": ("desc",)}
_PREFIXES = {"num": "number:", "title": "topic:", "desc": "description:", "narr": "narrative:"}


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, data in enumerate(handle, start=1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(path, number, "invalid UTF-8", "re-encode the file as UTF-8") from None
                yield number, line.removeprefix("\ufeff").rstrip("\r\n")
    except GZIP_ERRORS as error:
        raise gzip_error(path, number + 1, error) from None


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
        if stripped.startswith("<"):
            return "trec-xml"
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
        fields = line.split("\t")
        if first:
            first = False
            if fields[0].strip().lower() in _TSV_HEADER_QIDS:
                continue
        if len(fields) > 2:
            raise InputError(
                path,
                number,
                f"{len(fields)} TAB-separated columns; expected qid<TAB>text",
                f"keep only the id and text columns (e.g. cut -f1,{len(fields)} {path}), "
                "or remove the TABs inside the text",
            )
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
        text = record[text_name]
        if isinstance(text, (list, dict)):
            kind = "list" if isinstance(text, list) else "object"
            raise InputError(
                path, number, f"the text field {text_name!r} is a {kind}, not a string", "make it one string"
            )
        yield number, _checked(path, number, str(record[qid_name]), str(text or ""))


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
            yield block_start, _topic_query(path, block_start, fields, topic_field, _SGML_FIELDS)
            block_start = None
        elif not closing:
            if block_start is None:
                raise InputError(path, line, f"<{tag}> outside a <top> block", "fix the topic file")
            current = (tag, match.end())
    if block_start is not None:
        raise InputError(path, block_start, "<top> is never closed", "add </top>")


_XML_TOPIC = re.compile(r"<topic\b([^>]*)>(.*?)</topic\s*>", re.IGNORECASE | re.DOTALL)
_XML_NUMBER = re.compile(r"""\b(?:number|id)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_XML_FIELDS = {"title": ("query", "title"), "desc": ("question", "description", "desc")}
"""XML elements read for each topic field, first present wins (``<query>`` in Web/COVID, ``<title>``
in some conversions; ``<question>`` in TREC-COVID, ``<description>`` in the Web tracks)."""


def _xml_element(body: str, names: tuple[str, ...]) -> str:
    for name in names:
        match = re.search(rf"<{name}\b[^>]*>(.*?)</{name}\s*>", body, re.IGNORECASE | re.DOTALL)
        if match:
            text = re.sub(r"<!\[CDATA\[(.*?)\]\]>", r"\1", match.group(1), flags=re.DOTALL)
            return " ".join(html.unescape(text).split())
    return ""


def _trec_xml(path: Path, topic_field: str) -> Iterator[tuple[int, Query]]:
    """XML topics: ``<topic number="N" ...>`` elements anywhere in the file (under any root, or none),
    read with regular expressions rather than an XML parser, because distributed topic files often
    hold bare ``&`` and several roots; entities are still decoded."""
    text = "\n".join(line for _, line in _lines(path))
    found = False
    for match in _XML_TOPIC.finditer(text):
        found = True
        line = text.count("\n", 0, match.start()) + 1
        number = _XML_NUMBER.search(match.group(1))
        qid = number.group(1).strip() if number else _xml_element(match.group(2), ("number", "num"))
        if not qid:
            raise InputError(path, line, "<topic> without a number attribute", 'add number="..." to it')
        fields = {"num": qid}
        for name, elements in _XML_FIELDS.items():
            fields[name] = _xml_element(match.group(2), elements)
        yield line, _topic_query(path, line, fields, topic_field, _XML_FIELDS)
    if not found:
        raise InputError(
            path,
            None,
            "no <topic> elements found",
            "pass TREC topics (<top> or <topic number=...>), TSV or JSONL",
        )


def _topic_query(
    path: Path, line: int, fields: dict[str, str], topic_field: str, elements: Mapping[str, tuple[str, ...]]
) -> Query:
    qid = fields.get("num", "")
    parts = ["title", "desc"] if topic_field == "title+desc" else [topic_field]
    missing = [p for p in parts if not fields.get(p)]
    if qid and missing:
        names = " or ".join(f"<{name}>" for name in elements[missing[0]])
        raise InputError(path, line, f"topic {qid} has no {names}", f"pick another {opt('topic_field')}")
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
    """All queries of ``path`` in file order (only those in ``only_ids`` when given, e.g. qrels ids);
    ``path`` may be an ``irds:`` id (``formats/irds.py``)."""
    if topic_field not in TOPIC_FIELDS:
        raise LyreError(f"unknown topic field {topic_field!r}; use one of {', '.join(TOPIC_FIELDS)}")
    if irds_id(path) is not None:
        return [q for q in read_irds_queries(path, topic_field) if only_ids is None or q.qid in only_ids]
    path = Path(path)
    if not path.is_file():
        raise LyreError(f"{path}: no such query file; check the path")
    fmt = _detect(path)
    records = {"tsv": _tsv, "jsonl": _jsonl, "parquet": _parquet}.get(fmt)
    if records is not None:
        items = records(path)
    else:
        items = _trec_xml(path, topic_field) if fmt == "trec-xml" else _trec(path, topic_field)
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
