from pathlib import Path

import pytest
from lyre.basics.errors import InputError
from lyre.formats.qrels import qrels_dict, read_qrels
from lyre.formats.records import Qrel

EXPECTED = [Qrel("q1", "d1", 1), Qrel("q1", "d2", 0), Qrel("q2", "d1", 2)]


def test_beir_tsv_with_header(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td1\t2\n", encoding="utf-8")
    assert read_qrels(path) == EXPECTED
    assert qrels_dict(EXPECTED) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}}


def test_trec_qrels(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\nq1 0 d2 0\n\nq2 Q0 d1 2\n", encoding="utf-8")
    assert read_qrels(path) == EXPECTED


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q1 0 d1 1\nq1 0 d2\n", ":2: expected 4 columns, found 3"),
        ("q1 0 d1 1\nq1 0 d2 high\n", ":2: relevance 'high' is not an integer"),
        (
            "q1 0 d1 1\nq2 0 d1 1\nq1 0 d1 2\n",
            ":3: duplicate judgment for query 'q1', doc 'd1' (first at line 1)",
        ),
        ("q1 d1\n", ":1: 2 columns"),
    ],
)
def test_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "qrels.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_qrels(path)
    assert str(error.value).startswith(str(path) + message)


def test_shared_scifact_test_qrels(scifact: Path) -> None:
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    assert len(qrels) == 339 and len(qrels_dict(qrels)) == 300
