"""``lyre compare`` on real runs: two BM25 variants (rank_bm25, independent of lyre) over data/sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lyre.basics.errors import LyreError, OptionError
from lyre.formats.qrels import read_qrels
from lyre.formats.runs import read_run
from lyre.retrieval.compare import CompareOptions, compare
from lyre.retrieval.compare_tables import render
from lyre.retrieval.evaluation import evaluate
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
QRELS = SAMPLE / "qrels.tsv"


def _bm25_run(path: Path, with_title: bool, k1: float, b: float) -> Path:
    from rank_bm25 import BM25Okapi

    docs = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()]
    queries = [line.split("\t", 1) for line in (SAMPLE / "queries.tsv").read_text().splitlines()]
    index = BM25Okapi(
        [((d.get("title", "") + " " if with_title else "") + d["text"]).lower().split() for d in docs],
        k1=k1,
        b=b,
    )
    with open(path, "w") as out:
        for qid, text in queries:
            scores = index.get_scores(text.lower().split())
            for rank, i in enumerate(np.argsort(-scores, kind="stable")[:40], start=1):
                out.write(f"{qid} Q0 {docs[i]['_id']} {rank} {float(scores[i])!r} bm25\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    return {
        "title": _bm25_run(folder / "title.run", True, 0.9, 0.4),
        "text": _bm25_run(folder / "text.run", False, 1.5, 0.9),
        "strict": _bm25_run(folder / "strict.run", True, 0.1, 0.0),
    }


def _aligned(table_values: dict[str, dict[str, float]], qids: list[str], measure: str) -> np.ndarray:
    return np.array([table_values[q].get(measure, 0.0) for q in qids])


def test_t_test_p_values_equal_scipy_ttest_rel(runs: dict[str, Path]) -> None:
    options = CompareOptions(test="t", correction="none", measures="nDCG@10,AP,RR@10")
    report = compare(QRELS, runs["title"], [runs["text"], runs["strict"]], options)
    table = evaluate(
        QRELS, [str(p) for p in runs.values()], measures=["nDCG@10", "AP", "RR@10"], per_query=True
    )
    qids = list(dict.fromkeys(q.qid for q in read_qrels(QRELS)))
    for run in ("text", "strict"):
        for measure in report.measures:
            base = _aligned(table.per_query[str(runs["title"])], qids, measure)
            own = _aligned(table.per_query[str(runs[run])], qids, measure)
            expected = stats.ttest_rel(own, base).pvalue
            got = report.comparison(str(runs[run]), measure)
            assert got.p_value == pytest.approx(expected, abs=1e-9)
            assert got.difference == pytest.approx(own.mean() - base.mean(), abs=1e-12)
            assert (got.wins, got.losses) == (int((own > base).sum()), int((own < base).sum()))
    assert any(c.p_value < 0.5 for c in report.comparisons)  # the runs really differ


def test_different_query_order_and_missing_queries_are_paired_by_id(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """The same run written in reverse query order, without three queries and with an unjudged one:
    the compared values are the original run's, with the missing queries at 0."""
    original = read_run(runs["text"])
    dropped = ["Q02", "Q14", "Q22"]
    shuffled = tmp_path / "shuffled.run"
    with open(shuffled, "w") as out:
        for qid in [*reversed(list(original)), "UNJUDGED"]:
            if qid in dropped:
                continue
            docs = original.get(qid, {"D001": 1.0})
            for rank, (docid, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), start=1):
                out.write(f"{qid} Q0 {docid} {rank} {score!r} x\n")
    options = CompareOptions(measures="nDCG@10", correction="none", samples=2000)
    full = compare(QRELS, runs["title"], [runs["text"]], options)
    partial = compare(QRELS, runs["title"], [shuffled], options)
    expected = full.values[str(runs["text"])]["nDCG@10"].copy()
    expected[[full.qids.index(q) for q in dropped]] = 0.0
    assert partial.qids == full.qids
    np.testing.assert_array_equal(partial.values[str(shuffled)]["nDCG@10"], expected)
    assert partial.comparison(str(shuffled), "nDCG@10").difference == pytest.approx(
        float(np.mean(expected - full.values[str(runs["title"])]["nDCG@10"]))
    )

    reordered = tmp_path / "reordered.run"
    reordered.write_text("".join(reversed(runs["text"].read_text().splitlines(keepends=True))))
    same = compare(QRELS, runs["title"], [reordered], options).comparison(str(reordered), "nDCG@10")
    assert same.p_value == full.comparison(str(runs["text"]), "nDCG@10").p_value


def test_holm_correction_over_the_runs_of_each_measure(runs: dict[str, Path]) -> None:
    raw = compare(
        QRELS, runs["title"], [runs["text"], runs["strict"]], CompareOptions(correction="none", samples=2000)
    )
    holm = compare(
        QRELS, runs["title"], [runs["text"], runs["strict"]], CompareOptions(correction="holm", samples=2000)
    )
    for measure in raw.measures:
        p = [raw.comparison(str(runs[r]), measure).p_value for r in ("text", "strict")]
        low, high = sorted(p)
        expected = {low: min(1.0, 2 * low), high: max(min(1.0, 2 * low), high)}
        for r, value in zip(("text", "strict"), p, strict=True):
            c = holm.comparison(str(runs[r]), measure)
            assert c.p_corrected == pytest.approx(expected[value])
            assert c.significant == (c.p_corrected < 0.05)


def test_identical_runs_tie_everywhere(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.run"
    copy.write_bytes(runs["title"].read_bytes())
    report = compare(QRELS, runs["title"], [copy], CompareOptions(samples=1000))
    for c in report.comparisons:
        assert (c.difference, c.p_value, c.wins, c.losses, c.ties) == (0.0, 1.0, 0, 0, report.num_queries)


def test_output_formats(runs: dict[str, Path]) -> None:
    report = compare(
        QRELS,
        runs["title"],
        [runs["text"], runs["strict"]],
        CompareOptions(samples=1000, per_query=2),
        queries=SAMPLE / "queries.tsv",
    )
    data = json.loads(render(report, "json"))
    assert data["baseline"] == str(runs["title"]) and len(data["comparisons"]) == 2 * len(data["measures"])
    assert data["sources"]["qrels"]["sha256"] and "qids" not in data
    assert all(len(group["wins"]) <= 2 for group in data["largest_changes"].values())
    lines = render(report, "csv").splitlines()
    assert len(lines) == 1 + 3 * len(report.measures) and lines[0].startswith("measure,run,baseline")
    markdown = render(report, "markdown")
    assert markdown.startswith("| measure | run |") and "Holm" in markdown
    latex = render(report, "latex")
    assert r"\toprule" in latex and "title.run" in latex and "_" not in latex.split("%")[0].replace(r"\_", "")
    table = render(report, "table")
    worst = report.largest_changes[str(runs["strict"])]["losses"][0]
    assert worst.text and worst.text[:40] in table and worst.difference < 0


def test_bad_options_are_refused_before_reading(runs: dict[str, Path]) -> None:
    with pytest.raises(OptionError):
        compare(QRELS, runs["title"], [runs["text"]], CompareOptions(samples=10))
    with pytest.raises(OptionError):
        compare(QRELS, runs["title"], [runs["text"]], CompareOptions(correction="sidak"))
    with pytest.raises(LyreError, match="twice"):
        compare(QRELS, runs["title"], [runs["title"]], CompareOptions())


@pytest.mark.slow
def test_cli_prints_the_table_and_one_line_errors(runs: dict[str, Path]) -> None:
    lyre = [sys.executable, "-m", "lyre"]
    done = subprocess.run(
        [
            *lyre,
            "compare",
            str(QRELS),
            str(runs["title"]),
            str(runs["text"]),
            "--measures",
            "nDCG@10",
            "--samples",
            "1000",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "text.run" in done.stdout and "p (holm)" in done.stdout
    bad = subprocess.run(
        [*lyre, "compare", str(QRELS), str(runs["title"]), str(runs["text"]), "--test", "z"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--test" in bad.stderr


def test_samples_are_bounded_before_any_run_is_read(tmp_path: Path) -> None:
    """More resamples than a p-value can use are refused by their declared range, before the runs (which
    here do not exist) are read."""
    from lyre.retrieval.compare import check_compare
    from lyre.retrieval.significance import MAX_SAMPLES, resample_bytes

    missing = [tmp_path / "a.run", tmp_path / "b.run"]
    with pytest.raises(OptionError) as caught:
        check_compare(missing[0], missing[1:], CompareOptions(samples=MAX_SAMPLES + 1))
    assert caught.value.option == "samples" and "must be at most 1e+06" in str(caught.value)
    check_compare(missing[0], missing[1:], CompareOptions(samples=MAX_SAMPLES))
    assert resample_bytes(MAX_SAMPLES) == 8 * MAX_SAMPLES + (1 << 22) * 16
