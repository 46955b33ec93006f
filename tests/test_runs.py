import hashlib
import json

import numpy as np
import pytest
from lyre.basics.errors import InputError, LyreError
from lyre.formats.runs import format_score, meta_path, rank_order, ranked_columns, read_run, write_run


def test_rank_order_is_score_desc_then_docid_desc():
    scores = {"a": 1.0, "c": 2.0, "b": 1.0, "d": 0.5}
    assert rank_order(scores) == [("c", 2.0), ("b", 1.0), ("a", 1.0), ("d", 0.5)]


def test_write_run_lines_ranks_and_sidecar(tmp_path):
    path = tmp_path / "run.trec"
    run = {"q2": {"a": 1.0, "b": 1.0, "c": 3.5}, "q1": {"z": 0.25}}
    write_run(path, run, "bm25", {"index": "/idx", "params": {"k": 3}})
    assert path.read_text(encoding="utf-8").splitlines() == [
        "q2 Q0 c 1 3.5 bm25",
        "q2 Q0 b 2 1.0 bm25",
        "q2 Q0 a 3 1.0 bm25",
        "q1 Q0 z 1 0.25 bm25",
    ]
    meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
    assert meta["tag"] == "bm25" and meta["queries"] == 2 and meta["lines"] == 4 and meta["index"] == "/idx"
    assert "versions" in meta["provenance"]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # the sidecar names its run
    assert read_run(path) == run


def test_distinct_float32_scores_never_print_equal(tmp_path):
    base = np.float32(0.7)
    scores = [base, np.nextafter(base, np.float32(1)), np.nextafter(base, np.float32(0))]
    assert len({format_score(s) for s in scores}) == 3
    run = {"q": {f"d{i}": float(s) for i, s in enumerate(scores)}}
    write_run(tmp_path / "r", run, "t", {})
    assert read_run(tmp_path / "r") == run  # exact round trip, so trec_eval sees the same order


def test_bad_tag_and_nan_keep_previous_file(tmp_path):
    path = tmp_path / "run.trec"
    write_run(path, {"q": {"d": 1.0}}, "ok", {})
    before = path.read_text(encoding="utf-8")
    with pytest.raises(LyreError, match="tag 'my tag': a run tag must be non-empty without whitespace"):
        write_run(path, {"q": {"d": 2.0}}, "my tag", {})
    with pytest.raises(LyreError, match="is NaN"):
        write_run(path, {"q": {"d": float("nan")}}, "ok", {})
    assert path.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec", "run.trec.meta.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q Q0 d 1 1.0 t\nq Q0 e 2 0.5\n", ":2: expected 6 columns 'qid Q0 docid rank score tag', found 5"),
        ("q Q0 d 1 high t\n", ":1: rank must be an integer and score a number"),
        (
            "q Q0 d 1 1.0 t\nq Q0 e 2 0.5 t\nq Q0 d 3 0.1 t\n",
            ":3: duplicate doc 'd' for query 'q' (first at line 1)",
        ),
        ("q Q0 d 1 nan t\n", ":1: score nan is not finite"),
    ],
)
def test_read_run_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "run.trec"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_run(path)
    assert str(error.value).startswith(str(path) + message)


def test_ranked_columns_is_rank_order_whatever_the_input_order():
    rng = np.random.default_rng(7)
    # Few distinct scores, so ties are many; -0.0 and 0.0 tie as well.
    values = [-0.0, 0.0, 0.5, 1.0, 2.0]
    for _ in range(50):
        docids = [f"d{i}" for i in rng.permutation(40)]
        scores = {docid: float(rng.choice(values)) for docid in docids}
        expected = rank_order(scores)
        docs, ranked = ranked_columns(scores)
        assert list(zip(docs, ranked, strict=True)) == expected
        assert ranked_columns(dict(expected)) == (docs, ranked)  # an ordered list comes back as it is


def test_ranked_columns_reorders_ties_that_are_not_in_docid_order():
    # Scores descending but the tied pair in ascending docid order: not evaluated order yet.
    docs, scores = ranked_columns({"x": 3.0, "a": 2.0, "b": 2.0, "c": 1.0})
    assert docs == ["x", "b", "a", "c"] and scores == [3.0, 2.0, 2.0, 1.0]


def test_write_run_prints_any_number_type_as_the_exact_double(tmp_path):
    run = {"q": {"a": np.float32(0.1), "b": 2, "c": np.float64(0.25), "d": -0.0}}
    write_run(tmp_path / "r", run, "t", {})
    assert (tmp_path / "r").read_text(encoding="utf-8").splitlines() == [
        "q Q0 b 1 2.0 t",
        "q Q0 c 2 0.25 t",
        f"q Q0 a 3 {float(np.float32(0.1))!r} t",
        "q Q0 d 4 -0.0 t",
    ]
