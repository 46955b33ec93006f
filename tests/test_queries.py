import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lyre.basics.errors import InputError, LyreError
from lyre.formats.queries import read_queries
from lyre.formats.records import Query

QUERIES = [Query("1", "what is bm25"), Query("q-2", "dense retrieval ünïcode")]

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


def test_shared_scifact_queries(scifact: Path) -> None:
    assert len(read_queries(scifact / "queries.jsonl")) == 1109


def test_tsv_query_line_with_three_columns_is_an_error(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("1\twhat is bm25\n2\tdense\tretrieval\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_queries(path)
    assert str(error.value) == (
        f"{path}:2: 3 TAB-separated columns; expected qid<TAB>text; keep only the id and text columns "
        f"(e.g. cut -f1,3 {path}), or remove the TABs inside the text"
    )


def test_list_valued_query_text_is_an_error(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"_id": "1", "text": ["what", "is"]}\n', encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_queries(path)
    assert str(error.value) == f"{path}:1: the text field 'text' is a list, not a string; make it one string"


def test_truncated_gz_query_file_names_the_line_reached(tmp_path):
    path = tmp_path / "q.tsv.gz"
    lines = "".join(f"q{i}\tquery number {i} about topic {i * 7919 % 10007}\n" for i in range(5000))
    data = gzip.compress(lines.encode(), mtime=0)
    path.write_bytes(data[: len(data) // 2])
    line = zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n") + 1
    with pytest.raises(InputError) as error:
        read_queries(path)
    assert str(error.value) == (
        f"{path}:{line}: the gzip data ends early (the file is truncated); "
        f"copy or download the file again (`gzip -t {path}` tests it)"
    )


COVID_TOPICS = """<?xml version="1.0" encoding="UTF-8"?>
<topics task="COVIDSearch" batch="5">
  <topic number="1">
    <query>coronavirus origin</query>
    <question>what is the origin of COVID-19</question>
    <narrative>seeking range of information about the SARS-CoV-2 virus's origin</narrative>
  </topic>
  <topic number="2">
    <query>coronavirus response to weather changes</query>
    <question>how does the coronavirus respond to changes in the weather</question>
    <narrative>seeking range of information about the SARS-CoV-2 virus viability</narrative>
  </topic>
</topics>
"""

WEB_TOPICS = """<webtrack2009>
<topic number="51" type="faceted">
  <query>horse hooves</query>
  <description>
    Find information about horse hooves &amp; their care, and diseases of hooves.
  </description>
  <subtopic number="1" type="inf">
    Find information about horses' hooves and how to care for them.
  </subtopic>
</topic>
<topic number="52" type="ambiguous">
  <query>avp & alien</query>
  <description><![CDATA[Find information about the movie <AVP>.]]></description>
</topic>
</webtrack2009>
"""


def test_trec_xml_topics_covid_style(tmp_path):
    path = tmp_path / "topics-rnd5.xml"
    path.write_text(COVID_TOPICS, encoding="utf-8")
    assert read_queries(path) == [
        Query("1", "coronavirus origin"),
        Query("2", "coronavirus response to weather changes"),
    ]
    assert read_queries(path, topic_field="desc") == [
        Query("1", "what is the origin of COVID-19"),
        Query("2", "how does the coronavirus respond to changes in the weather"),
    ]
    assert read_queries(path, topic_field="title+desc")[0] == Query(
        "1", "coronavirus origin what is the origin of COVID-19"
    )


def test_trec_xml_topics_web_track_style(tmp_path):
    path = tmp_path / "wt09.topics.xml"
    path.write_text(WEB_TOPICS, encoding="utf-8")
    assert read_queries(path) == [Query("51", "horse hooves"), Query("52", "avp & alien")]
    assert read_queries(path, topic_field="desc") == [
        Query("51", "Find information about horse hooves & their care, and diseases of hooves."),
        Query("52", "Find information about the movie <AVP>."),
    ]


def test_trec_xml_topic_errors_are_located(tmp_path):
    path = tmp_path / "topics.xml"
    path.write_text('<topics>\n<topic number="7">\n<query>only a query</query>\n</topic>\n</topics>\n')
    with pytest.raises(InputError) as error:
        read_queries(path, topic_field="desc")
    assert str(error.value) == (
        f"{path}:2: topic 7 has no <question> or <description> or <desc>; pick another topic_field"
    )
    path.write_text("<topics>\n\n<topic>\n<query>x</query>\n</topic>\n</topics>\n")
    with pytest.raises(InputError) as error:
        read_queries(path)
    assert str(error.value) == f'{path}:3: <topic> without a number attribute; add number="..." to it'
    path.write_text("<queries><q id='1'>x</q></queries>\n")
    with pytest.raises(InputError) as error:
        read_queries(path)
    assert str(error.value) == (
        f"{path}: no <topic> elements found; pass TREC topics (<top> or <topic number=...>), TSV or JSONL"
    )
