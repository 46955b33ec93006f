"""`lyre search`, `lyre rerank` and `lyre fuse` as a user runs them: every invalid option fails before any
file is written or any model loaded, outputs never replace inputs, and rerank refuses queries it lacks.

No model is loaded when an option is wrong: each case also points --rerank-model at a folder that does
not exist, so a command that looked for the model first would name the model, not the option."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import LyreCli, bm25_index_and_run
from lyre.formats.runs import rank_order, read_run

NO_MODEL = "/no/such/reranker"


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> tuple[Path, Path]:
    """A BM25 index of the sample and a BM25 run of its 30 queries."""
    return bm25_index_and_run(tmp_path_factory.mktemp("search-commands"), lyre, sample)


SEARCH_CASES = [
    (["--k", "-5"], "--k -5: must be at least 1"),
    (["--k", "0"], "--k 0: must be at least 1"),
    (["--depth", "0", "--k", "1"], "--depth 0: must be at least 1"),
    (["--depth", "0"], "--depth 0"),
    (["--depth", "10", "--k", "20"], "--depth 10: is below --k 20"),
    (["--weight", "2"], "--weight 2.0: must be at most 1"),
    (["--rerank-depth", "-3"], "--rerank-depth -3: must be at least 0"),
    (["--refine", "-1"], "--refine -1: must be at least 0"),
    (["--nprobe", "0"], "--nprobe 0: must be at least 1"),
    (["--mode", "both"], "--mode both: is not known; use one of bm25, dense, hybrid"),
    (["--fusion", "comb"], "--fusion comb: is not known; use one of rrf, linear"),
    (["--rrf-k", "0"], "--rrf-k 0: must be at least 1"),
    (["--normalization", "max"], "--normalization max: is not known"),
    (["--tag", "two words"], "--tag 'two words': must be non-empty, without whitespace"),
    (["--rerank-template", "no slots"], "template"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), SEARCH_CASES, ids=[" ".join(case[0]) for case in SEARCH_CASES])
def test_invalid_search_options_fail_before_any_work(
    setup: tuple[Path, Path], lyre: LyreCli, sample: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    index, _ = setup
    before = snapshot(index)
    out = tmp_path / "x.run"
    result = lyre(
        "search", "--index", index, "--queries", sample / "queries.tsv", "--out", out,
        "--rerank-model", NO_MODEL, *args, check=False,
    )  # fmt: skip
    line = assert_one_line_error(result, message)
    assert NO_MODEL not in line and "k must" not in line
    assert not out.exists() and not out.with_name("x.run.parts").exists() and snapshot(index) == before


RERANK_CASES = [
    (["--rerank-depth", "0"], "--rerank-depth 0: must be at least 1"),
    (["--rerank-depth", "-3"], "--rerank-depth -3: must be at least 0"),
    (["--tag", "a b"], "--tag 'a b'"),
    (["--rerank-template", "no slots"], "template"),
]


@pytest.mark.parametrize(("args", "message"), RERANK_CASES, ids=[" ".join(case[0]) for case in RERANK_CASES])
def test_invalid_rerank_options_fail_before_any_work(
    setup: tuple[Path, Path], lyre: LyreCli, sample: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    index, run = setup
    out = tmp_path / "x.run"
    result = lyre(
        "rerank", "--index", index, "--queries", sample / "queries.tsv", "--run", run, "--out", out,
        "--rerank-model", NO_MODEL, *args, check=False,
    )  # fmt: skip
    assert NO_MODEL not in assert_one_line_error(result, message)
    assert not out.exists() and not out.with_name("x.run.parts").exists()


FUSE_CASES = [
    (["--fusion", "linear", "--weights", "a,b"], "--weights a,b: must be comma-separated numbers"),
    (["--fusion", "linear", "--weights", "0.5"], "--weights 0.5: has 1 value for 2 runs"),
    (["--fusion", "linear", "--weights", "-1,2"], "--weights -1,2: must not be negative"),
    (["--weights", "1,1"], "--weights 1,1: apply to linear fusion only (not rrf)"),
    (["--rrf-k", "0"], "--rrf-k 0: must be at least 1"),
    (["--fusion", "comb"], "--fusion comb: is not known"),
    (["--normalization", "max"], "--normalization max"),
    (["--k", "0"], "--k 0: must be at least 1"),
]


@pytest.mark.parametrize(("args", "message"), FUSE_CASES, ids=[" ".join(case[0]) for case in FUSE_CASES])
def test_invalid_fuse_options_fail_before_any_work(
    setup: tuple[Path, Path], lyre: LyreCli, tmp_path: Path, args: list[str], message: str
) -> None:
    _, run = setup
    out = tmp_path / "f.run"
    assert_one_line_error(lyre("fuse", run, run, "--out", out, *args, check=False), message)
    assert not out.exists()


def test_fuse_with_weights_is_the_linear_registry_fusion(lyre: LyreCli, tmp_path: Path) -> None:
    first, second = tmp_path / "a.run", tmp_path / "b.run"
    first.write_text("q Q0 d1 1 2.0 a\nq Q0 d2 2 1.0 a\n")  # min-max: d1 1, d2 0
    second.write_text("q Q0 d2 1 9.0 b\nq Q0 d3 2 8.0 b\n")  # min-max: d2 1, d3 0
    lyre("fuse", first, second, "--fusion", "linear", "--weights", "0.25,0.75", "--out", tmp_path / "f.run")
    assert read_run(tmp_path / "f.run")["q"] == pytest.approx({"d1": 0.25, "d2": 0.75, "d3": 0.0})
    assert "lyre.fuse-linear0.25,0.75" in (tmp_path / "f.run").read_text()


@pytest.mark.slow
def test_outputs_never_replace_inputs(
    setup: tuple[Path, Path], lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    index, run = setup
    queries, qrels = tmp_path / "queries.tsv", tmp_path / "qrels.tsv"
    queries.write_bytes((sample / "queries.tsv").read_bytes())
    qrels.write_bytes((sample / "qrels.tsv").read_bytes())
    inputs = {path: path.read_bytes() for path in (queries, qrels, run)}
    before = snapshot(index)
    search = ["search", "--index", index, "--queries", queries, "--mode", "bm25", "--rerank-depth", "0"]
    for out, message in [
        (queries, "is the queries file"),
        (index / "manifest.json", "lies inside the index"),
        (index, "is an existing folder"),
        (tmp_path, "is an existing folder"),
    ]:
        assert_one_line_error(lyre(*search, "--out", out, check=False), f"--out {out}", message)
    assert_one_line_error(lyre(*search, "--qrels", qrels, "--out", qrels, check=False), "is the qrels")
    rerank = ["rerank", "--index", index, "--queries", queries, "--run", run, "--rerank-model", NO_MODEL]
    assert_one_line_error(lyre(*rerank, "--out", run, check=False), "is the input run")
    assert_one_line_error(lyre("fuse", run, queries, "--out", run, check=False), "is the input run")
    assert {path: path.read_bytes() for path in inputs} == inputs and snapshot(index) == before


@pytest.mark.slow
def test_rerank_refuses_run_queries_missing_from_the_query_file_unless_told(
    setup: tuple[Path, Path], lyre: LyreCli, sample: Path, tmp_path: Path, qwen_reranker_folder: Path
) -> None:
    index, run = setup
    lines = (sample / "queries.tsv").read_text().splitlines(keepends=True)
    some = tmp_path / "some.tsv"
    some.write_text("".join(lines[:5]))
    missing = [line.split("\t")[0] for line in lines[5:]]
    out = tmp_path / "r.run"
    rerank = [
        "-q",
        "rerank",
        "--index",
        index,
        "--queries",
        some,
        "--run",
        run,
        "--out",
        out,
        "--rerank-depth",
        "3",
    ]
    result = lyre(*rerank, "--rerank-model", NO_MODEL, check=False)
    assert_one_line_error(result, f"{some}: 25 of the run's 30 queries", ", ".join(missing[:5]) + ", ...")
    assert "--skip-missing-queries" in result.stderr and not out.exists()

    lyre(*rerank, "--rerank-model", qwen_reranker_folder, "--skip-missing-queries")
    before, after = read_run(run), read_run(out)
    assert list(after) == list(before)
    for qid in missing:
        assert rank_order(after[qid]) == rank_order(before[qid])  # kept as they were
    kept = [line.split("\t")[0] for line in lines[:5]]
    assert any(rank_order(after[qid])[:3] != rank_order(before[qid])[:3] for qid in kept)
