import json
import math
from pathlib import Path

import numpy as np
import pytest
from lyre.basics.errors import LyreError
from lyre.formats.qrels import qrels_dict, read_qrels
from lyre.formats.runs import rank_order, write_run
from lyre.retrieval.evaluation import DEFAULT_MEASURES, evaluate, format_table


def _qrels(tmp_path: Path) -> Path:
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq1\tb\t0\nq2\tx\t1\n", encoding="utf-8")
    return path


def test_closed_form_values_and_missing_queries_count_zero(tmp_path):
    run = tmp_path / "run"
    write_run(run, {"q1": {"b": 2.0, "a": 1.0}, "q3": {"x": 5.0}}, "t", {})
    table = evaluate(
        _qrels(tmp_path), [run], measures=["RR@10", "R@100", "nDCG@10", "Judged@10"], per_query=True
    )
    assert table.num_queries == 2  # q3 is not judged: ignored; q2 is judged but unanswered: 0
    means = table.means[str(run)]
    assert means["RR@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert means["R@100"] == pytest.approx((1 + 0) / 2)
    assert means["nDCG@10"] == pytest.approx((1 / math.log2(3)) / 2)
    assert means["Judged@10"] == pytest.approx((2 / 2 + 0) / 2)
    assert table.per_query[str(run)]["q2"] == dict.fromkeys(table.measures, 0.0)


def test_ties_are_evaluated_in_trec_eval_order(tmp_path):
    run = tmp_path / "run"
    run.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 z 2 1.0 t\n", encoding="utf-8")  # z ranks first: docid descending
    table = evaluate(_qrels(tmp_path), [run], measures=["RR@10"])
    assert table.means[str(run)]["RR@10"] == pytest.approx(0.5 / 2)


def test_table_text_and_json(tmp_path):
    runs = []
    for name, scores in (("one", {"a": 2.0, "b": 1.0}), ("two", {"b": 2.0, "a": 1.0})):
        write_run(tmp_path / name, {"q1": scores, "q2": {"x": 1.0}}, name, {})
        runs.append(tmp_path / name)
    table = evaluate(_qrels(tmp_path), runs)
    assert table.measures == list(DEFAULT_MEASURES)
    text = format_table(table)
    assert text.splitlines()[0].split() == ["run", *DEFAULT_MEASURES]
    assert f"{tmp_path / 'one'}  " in text and "1.0000" in text and "0.7500" in text
    assert json.loads(json.dumps(table.to_dict()))["means"][str(runs[1])]["RR@10"] == pytest.approx(0.75)
    per_query = format_table(evaluate(_qrels(tmp_path), runs[:1], per_query=True))
    assert [line.split()[1] for line in per_query.splitlines()[1:4]] == ["q1", "q2", "all"]


def test_unknown_measure(tmp_path):
    with pytest.raises(LyreError, match="unknown measure 'nDCG@ten'"):
        evaluate(_qrels(tmp_path), [tmp_path / "x"], measures=["nDCG@ten"])


def test_equals_pytrec_eval_on_scifact(tmp_path: Path, scifact: Path) -> None:
    """A run over the real SciFact test qrels: relevant docs mixed with other queries' relevant docs,
    scores from a seeded RNG rounded to 0.05 (so ties occur), 10% of the queries left unanswered."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels_path = scifact / "qrels" / "test.tsv"
    qrels = qrels_dict(read_qrels(qrels_path))
    pool = sorted({d for docs in qrels.values() for d in docs})
    rng = np.random.default_rng(7)
    run = {}
    for i, (qid, judged) in enumerate(qrels.items()):
        if i % 10 == 3:
            continue
        docids = set(judged) | set(rng.choice(pool, size=150, replace=False).tolist())
        run[qid] = {d: float(np.round(rng.random() * 20) / 20) for d in sorted(docids)}
    path = tmp_path / "run.trec"
    write_run(path, run, "perturbed", {})
    table = evaluate(qrels_path, [path], per_query=True)

    measures = {"ndcg_cut_10", "recall_100", "recall_1000", "map"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    top10 = {qid: dict(rank_order(scores)[:10]) for qid, scores in run.items()}
    rr10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    names = {"nDCG@10": "ndcg_cut_10", "R@100": "recall_100", "R@1000": "recall_1000", "AP": "map"}
    ours = table.per_query[str(path)]
    for qid in qrels:
        expected = {ours_name: reference.get(qid, {}).get(ref, 0.0) for ours_name, ref in names.items()}
        expected["RR@10"] = rr10.get(qid, {}).get("recip_rank", 0.0)
        judged = sum(d in qrels[qid] for d in top10.get(qid, {}))
        expected["Judged@10"] = judged / 10 if qid in run else 0.0
        for name, value in expected.items():
            assert ours[qid].get(name, 0.0) == pytest.approx(value, abs=1e-12), (qid, name)
    for name in DEFAULT_MEASURES:  # trec_eval -c: the mean over all 300 judged queries
        assert table.means[str(path)][name] == pytest.approx(sum(ours[q].get(name, 0.0) for q in qrels) / 300)
    assert table.num_queries == 300


@pytest.mark.slow
def test_eval_warns_when_no_run_query_is_judged_and_still_prints(tmp_path, lyre):
    qrels = _qrels(tmp_path)
    run = tmp_path / "other.run"
    write_run(run, {"x1": {"a": 1.0}, "x2": {"b": 1.0}}, "t", {})
    result = lyre("eval", qrels, run, "--measures", "RR@10", check=False)
    assert result.returncode == 0
    assert result.stderr == (
        f"warning: {run}: none of its 2 queries is judged in {qrels} (e.g. query 'x1'); every measure is 0; "
        "check that the run and the qrels are for the same queries\n"
    )
    assert result.stdout.splitlines()[1].split() == [str(run), "0.0000"]


@pytest.mark.slow
def test_eval_warns_on_an_empty_run_and_records_the_warning(tmp_path, lyre):
    qrels = _qrels(tmp_path)
    empty, good = tmp_path / "empty.run", tmp_path / "good.run"
    empty.write_text("", encoding="utf-8")
    write_run(good, {"q1": {"a": 1.0}, "q2": {"x": 1.0}}, "t", {})
    result = lyre("eval", qrels, empty, good, "--measures", "RR@10", "--json", check=False)
    assert result.returncode == 0
    assert result.stderr == f"warning: {empty}: the run is empty; every measure is 0\n"  # good.run: no word
    assert json.loads(result.stdout)["warnings"] == [f"{empty}: the run is empty; every measure is 0"]


def test_a_run_of_passage_ids_against_document_qrels_is_warned_once(tmp_path, capsys):
    """``aggregate none`` runs list ``DOCID#N``: against document qrels nothing matches and every measure
    is 0, which one warning explains (once per run, however many queries)."""
    qrels = _qrels(tmp_path)
    passages, documents, unrelated = tmp_path / "passages.run", tmp_path / "documents.run", tmp_path / "u.run"
    write_run(passages, {"q1": {"a#0": 2.0, "a#3": 1.5, "b#1": 1.0}, "q2": {"x#2": 1.0}}, "t", {})
    write_run(documents, {"q1": {"a#0": 2.0, "a": 1.0}, "q2": {"x#2": 1.0}}, "t", {})
    write_run(unrelated, {"q1": {"c#0": 2.0}, "q2": {"y#1": 1.0}}, "t", {})
    table = evaluate(qrels, [passages, documents, unrelated], measures=["RR@10"])
    expected = (
        f"{passages}: its ids are passage ids of judged documents (e.g. 'a#0') and none is judged in "
        f"{qrels}, "
        "so every measure is 0; make a document run (`lyre search --aggregate maxp`) or evaluate it against "
        "passage qrels"
    )
    assert table.warnings == [
        expected
    ]  # documents.run has a judged id; u.run's passages are of no judged one
    assert capsys.readouterr().err == f"warning: {expected}\n"
    assert table.means[str(passages)]["RR@10"] == 0.0 and table.means[str(documents)]["RR@10"] == 0.5 / 2
