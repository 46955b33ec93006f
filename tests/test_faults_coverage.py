"""Evaluation honest about coverage (issue 18, class 7): judged queries that were never searched are said,
never silently counted.

``lyre tune`` with a queries file holding 10 of the sample's 30 judged queries tunes on those 10 (one
warning says the other 20 are left out; folds are made of the 10), and its means are those ``lyre eval``
gives the same runs on the same 10 queries. ``lyre eval`` and ``lyre compare`` say once per run how many
judged queries it has no results for (they score 0). All through the command line on the sample's BM25
index.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import SAMPLE, LyreCli, bm25_index_and_run, one_line_error
from lyre.retrieval.evaluation import evaluate

QRELS = SAMPLE / "qrels.tsv"
SEARCHED = 10
"""Queries of the partial queries file: the sample's first 10 of 30, all judged."""
JUDGED = 30


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> dict[str, Path]:
    """The sample's BM25 index, a run of its 30 queries, the first 10 queries and their judgments alone."""
    folder = tmp_path_factory.mktemp("coverage")
    index, run = bm25_index_and_run(folder, lyre, SAMPLE)
    lines = (SAMPLE / "queries.tsv").read_text(encoding="utf-8").splitlines()[:SEARCHED]
    partial = folder / "first10.tsv"
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    searched = {line.split("\t")[0] for line in lines}
    judged = [line for line in QRELS.read_text().splitlines() if line.split()[0] in searched]
    own_qrels = folder / "first10.qrels"
    own_qrels.write_text("\n".join(judged) + "\n", encoding="utf-8")
    return {"folder": folder, "index": index, "run": run, "queries": partial, "qrels": own_qrels}


def tune(lyre: LyreCli, paths: dict[str, Path], queries: Path, out: str) -> subprocess.CompletedProcess[str]:
    return lyre(
        "tune", "--index", paths["index"], "--queries", queries, "--qrels", QRELS, "--mode", "bm25",
        "--rerank-depth", "0", "--grid", "k=5,10", "--folds", "5", "--out", paths["folder"] / out,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def partial_tune(sample_index: dict[str, Path], lyre: LyreCli) -> subprocess.CompletedProcess[str]:
    """``lyre tune`` of k=5 and k=10 with the queries file of the first 10 queries and the full qrels."""
    result = tune(lyre, sample_index, sample_index["queries"], "partial.json")
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_tune_leaves_out_judged_queries_it_did_not_search_and_says_so(sample_index, partial_tune) -> None:
    warnings = [line for line in partial_tune.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {SEARCHED} of {JUDGED} judged queries searched; the {JUDGED - SEARCHED} not in "
        f"{sample_index['queries']} (e.g. Q11) are left out of the tuning, not counted as 0"
    ]
    lines = partial_tune.stdout.splitlines()
    assert lines[-2].startswith(
        f"chosen on the {SEARCHED} searched dev queries ({JUDGED - SEARCHED} judged queries not in the "
        "queries file left out): "
    )
    header = next(i for i, line in enumerate(lines) if line.startswith("fold"))
    assert sum(int(fold.split()[1]) for fold in lines[header + 1 : header + 6]) == SEARCHED


@pytest.mark.slow
def test_tune_means_are_the_eval_means_of_the_searched_queries(sample_index, partial_tune, lyre) -> None:
    """Each setting's mean is what ``lyre eval`` gives its run on the 10 searched queries' judgments:
    the 20 unsearched queries are in no denominator. The k=5 run is the k=10 run's first 5 lines of each
    query (a run file lists each query's documents best first)."""
    table = {row.split()[2]: float(row.split()[1]) for row in partial_tune.stdout.splitlines()[1:3]}
    top10 = sample_index["folder"] / "k10.run"
    lyre(
        "-q", "search", "--index", sample_index["index"], "--queries", sample_index["queries"],
        "--mode", "bm25", "--rerank-depth", "0", "--k", "10", "--out", top10,
    )  # fmt: skip
    top5 = sample_index["folder"] / "k5.run"
    lines = top10.read_text(encoding="utf-8").splitlines()
    top5.write_text("".join(line + "\n" for line in lines if int(line.split()[3]) <= 5), encoding="utf-8")
    for setting, run in (("k=10", top10), ("k=5", top5)):
        evaluated = evaluate(sample_index["qrels"], [run], measures=["nDCG@10"])
        assert evaluated.means[str(run)]["nDCG@10"] == pytest.approx(table[setting], abs=5e-5)


@pytest.mark.slow
def test_tune_refuses_a_queries_file_with_no_judged_query(sample_index, lyre, tmp_path) -> None:
    unjudged = tmp_path / "unjudged.tsv"
    unjudged.write_text("X1\tbread that sank\n", encoding="utf-8")
    result = tune(lyre, sample_index, unjudged, "none.json")
    one_line_error(result, str(unjudged), "none of its queries is judged")


def partial_run(sample_index: dict[str, Path], answered: int) -> Path:
    """The sample run with only its first ``answered`` queries."""
    lines = sample_index["run"].read_text(encoding="utf-8").splitlines()
    order = list(dict.fromkeys(line.split()[0] for line in lines))[:answered]
    path = sample_index["folder"] / f"first{answered}.run"
    path.write_text("\n".join(line for line in lines if line.split()[0] in order) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_eval_says_once_per_run_how_many_judged_queries_it_does_not_answer(sample_index, lyre) -> None:
    twenty, full = partial_run(sample_index, 20), sample_index["run"]
    result = lyre("eval", QRELS, twenty, full, "--measures", "nDCG@10", "--json", check=False)
    assert result.returncode == 0, result.stderr
    warning = (
        f"{twenty}: 10 of the {JUDGED} judged queries have no results in it (e.g. query 'Q21'); they score 0 "
        "in every measure"
    )
    assert result.stderr == f"warning: {warning}\n"  # the full run: no word
    assert json.loads(result.stdout)["warnings"] == [warning]


@pytest.mark.slow
def test_compare_says_it_too(sample_index, lyre) -> None:
    twenty = partial_run(sample_index, 20)
    result = lyre("compare", QRELS, sample_index["run"], twenty, "--measures", "nDCG@10", check=False)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: {twenty}: 10 of the {JUDGED} judged queries have no results in it (e.g. query 'Q21'); "
        "they score 0 in every measure"
    ]
