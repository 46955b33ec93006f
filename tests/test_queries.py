import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from basics.errors import InputError, LyreError
from formats.queries import read_queries
from formats.records import Query

QUERIES = [Query("1", "what is bm25"), Query("q-2", "dense retrieval ünïcode")]
SHARED = Path("/work/shared/data")

TOPICS = """<top>
<num> Number: 401
<title> foreign minorities, Germany

<desc> Description:
What language and cultural differences impede
the integration of foreign minorities in Germany?

<narr> Narrative:
A relevant document will focus on the causes.
</top>

<top>
<num> Number: 402 </num>
<title> behavioral genetics </title>
<desc> Description: What is happening in the field? </desc>
</top>
"""


def test_tsv_with_and_without_header(tmp_path):
    body = "".join(f"{q.qid}\t{q.text}\n" for q in QUERIES)
    (tmp_path / "a.tsv").write_text(body, encoding="utf-8")
    (tmp_path / "b.tsv").write_text("query-id\ttext\n" + body, encoding="utf-8")
    assert read_queries(tmp_path / "a.tsv") == QUERIES
    assert read_queries(tmp_path / "b.tsv") == QUERIES


@pytest.mark.parametrize(("id_key", "text_key"), [("_id", "text"), ("qid", "query")])
def test_jsonl_variants(tmp_path, id_key, text_key):
    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(json.dumps({id_key: q.qid, text_key: q.text}) + "\n" for q in QUERIES), encoding="utf-8"
    )
    assert read_queries(path) == QUERIES


def test_trec_topics_each_field(tmp_path):
    path = tmp_path / "topics.401-402.txt"
    path.write_text(TOPICS, encoding="utf-8")
    assert read_queries(path) == [
        Query("401", "foreign minorities, Germany"),
        Query("402", "behavioral genetics"),
    ]
    desc = read_queries(path, topic_field="desc")
    assert desc[0] == Query(
        "401",
        "What language and cultural differences impede the integration of foreign minorities in Germany?",
    )
    both = read_queries(path, topic_field="title+desc")
    assert both[1] == Query("402", "behavioral genetics What is happening in the field?")
    with pytest.raises(LyreError, match="unknown topic field"):
        read_queries(path, topic_field="narrative")


def test_trec_topic_without_chosen_field_is_located(tmp_path):
    path = tmp_path / "topics.txt"
    path.write_text("<top>\n<num> 1\n<title> a\n</top>\n\n<top>\n<num> 2\n</top>\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"topics\.txt:6: topic 2 has no <title>"):
        read_queries(path)


def test_parquet(tmp_path):
    pq.write_table(
        pa.table({"qid": [q.qid for q in QUERIES], "text": [q.text for q in QUERIES]}), tmp_path / "q.parquet"
    )
    assert read_queries(tmp_path / "q.parquet") == QUERIES


def test_only_ids_filters_in_file_order(tmp_path):
    (tmp_path / "q.tsv").write_text("".join(f"{q.qid}\t{q.text}\n" for q in QUERIES), encoding="utf-8")
    assert read_queries(tmp_path / "q.tsv", only_ids={"q-2", "missing"}) == [QUERIES[1]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1\ta\n2\tb\n1\tc\n", ":3: duplicate query id '1' (first at line 1)"),
        ("1\ta\n2 no tab\n", ":2: expected qid<TAB>text"),
        ("1\ta\n2\t  \n", ":2: query '2' has empty text"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "q.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_queries(path)
    assert str(error.value).startswith(str(path) + message)


def test_jsonl_malformed_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"_id": "1", "text": "a"}\n{"_id": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"q\.jsonl:2: malformed JSON"):
        read_queries(path)


def test_shared_scifact_queries():
    if not (SHARED / "scifact").exists():
        pytest.skip("shared BEIR data not present")
    assert len(read_queries(SHARED / "scifact" / "queries.jsonl")) == 1109
