"""``lyre compare --plot``: real files in every format, recall curves checked against lyre eval."""

from __future__ import annotations

import base64
import itertools
import re
import sys
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError
from lyre.retrieval.compare import CompareOptions, compare
from lyre.retrieval.evaluation import evaluate
from lyre.retrieval.plots import RECALL_DEPTHS, check_plot_path, recall_curves, write_plot

REPO = Path(__file__).resolve().parents[1]
QRELS = REPO / "data" / "sample" / "qrels.tsv"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A run that finds each query's judged documents at rank 1.. and one that finds them only at rank 50.."""
    from lyre.formats.qrels import qrels_dict, read_qrels

    folder = tmp_path_factory.mktemp("plot-runs")
    qrels = qrels_dict(read_qrels(QRELS))
    paths = []
    for name, start in (("early", 1), ("late", 50)):
        path = folder / f"{name}.run"
        with open(path, "w") as out:
            for qid, judged in qrels.items():
                docs = [f"X{i:03d}" for i in range(start - 1)] + sorted(judged)
                for rank, docid in enumerate(docs, start=1):
                    out.write(f"{qid} Q0 {docid} {rank} {1000 - rank} {name}\n")
        paths.append(path)
    return paths


def test_recall_curves_match_lyre_eval_and_never_decrease(runs: list[Path]) -> None:
    curves = recall_curves(QRELS, [str(p) for p in runs])
    table = evaluate(QRELS, runs, measures=["R@10", "R@100"])
    for run in runs:
        curve = curves[str(run)]
        assert RECALL_DEPTHS[0] == 1 and RECALL_DEPTHS[-1] == 1000 and len(curve) == len(RECALL_DEPTHS)
        assert all(a <= b for a, b in itertools.pairwise(curve))
        for depth in (10, 100):
            assert curve[RECALL_DEPTHS.index(depth)] == pytest.approx(table.means[str(run)][f"R@{depth}"])
    assert curves[str(runs[1])][RECALL_DEPTHS.index(10)] == 0.0 and curves[str(runs[0])][-1] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".png", ".svg", ".html"])
def test_plot_files_render_and_name_runs_qrels_and_measure(
    runs: list[Path], tmp_path: Path, suffix: str
) -> None:
    report = compare(QRELS, runs[0], [runs[1]], CompareOptions(measures="nDCG@10,AP", samples=1000))
    path = write_plot(report, tmp_path / f"compare{suffix}")
    data = path.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
        return
    text = data.decode()
    if suffix == ".html":
        assert not re.search(r"""(src|href)=['"](?!data:)""", text)  # nothing outside the file
        embedded = re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text)
        assert embedded and "late.run" in text and "<table>" in text
        text = base64.b64decode(embedded.group(1)).decode()
    assert text.lstrip().startswith(("<?xml", "<svg"))
    for name in ("late.run", "early.run", "qrels.tsv", "nDCG@10"):
        assert name in text


def test_bad_suffix_and_missing_matplotlib_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LyreError, match="png"):
        check_plot_path(Path("plot.pdf"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(LyreError, match=r"lychee-retrieval\[plots\]"):
        check_plot_path(Path("plot.png"))
