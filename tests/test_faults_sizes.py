"""Numbers that should be refused, and sizes checked against what exists before anything is allocated
(issue 18, class 9).

Every reproduction of the issue ends in exit 2 with one ``error:`` line, or in a run capped to what the
index holds with a one-line notice; and every numeric option of search, fuse, compare, tune and eval,
given an absurd value, does one or the other. All run through the command line in one child process whose
address space is limited (``RLIMIT_AS``), so a regression that allocates what a huge number asks for
fails at once with a MemoryError instead of swapping the machine; one process runs every case, so the
whole walk costs one interpreter start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from helpers import REPOSITORY, SAMPLE, LyreCli, bm25_index_and_run, one_line_error
from lyre.basics.declared import option_spec
from lyre.cli.flags import flag_of
from lyre.formats.runs import read_run
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.compare import CompareOptions
from lyre.retrieval.options import FuseOptions, RerankOptions, SearchOptions
from lyre.retrieval.tune import TuneOptions

ADDRESS_SPACE = 3 << 30
"""The child's address-space limit: lyre's own imports need a few hundred MiB; the issue's reproductions
asked numpy for 22 GiB and more."""
QRELS = SAMPLE / "qrels.tsv"
QUERIES = SAMPLE / "queries.tsv"
DOCUMENTS = 120
"""Documents of the bundled sample."""
HUGE = 100_000_000

CASE_SECONDS = 30
"""A case still running after this long is stopped and fails (a number that sizes work with no bound)."""
RUN_ALL = f"""
import contextlib, io, json, signal, sys, traceback
from lyre.basics import progress
from lyre.cli.app import main

def stop(signum, frame):
    raise TimeoutError("still running after {CASE_SECONDS} s")

signal.signal(signal.SIGALRM, stop)
results = {{}}
for name, argv in json.load(sys.stdin).items():
    out, err = io.StringIO(), io.StringIO()
    progress.set_quiet(False)
    sys.argv = ["lyre", *argv]
    code = 0
    signal.alarm({CASE_SECONDS})
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    signal.alarm(0)
    results[name] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""
"""Runs each named command line of a JSON object on stdin through ``lyre``'s entry point, in this one
process, each for at most :data:`CASE_SECONDS`, and prints ``{name: [exit code, stdout, stderr]}``."""


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(cases: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case run by :data:`RUN_ALL` in one child limited to :data:`ADDRESS_SPACE` (one BLAS thread,
    whose buffers would otherwise take address space per core)."""
    threads = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    child = subprocess.run(
        [sys.executable, "-c", RUN_ALL], input=json.dumps(cases), capture_output=True, text=True,
        cwd=REPOSITORY, env={**os.environ, **threads}, preexec_fn=_limit_address_space, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    found = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        name: subprocess.CompletedProcess(cases[name], code, stdout, stderr)
        for name, (code, stdout, stderr) in found.items()
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> dict[str, Path]:
    """A BM25 index of the sample, two BM25 runs of it (20 and 10 hits a query) and a folder for outputs."""
    folder = tmp_path_factory.mktemp("sizes")
    index, run = bm25_index_and_run(folder, lyre, SAMPLE)
    other = folder / "other.run"
    lyre(
        "-q", "search", "--index", index, "--queries", QUERIES, "--mode", "bm25", "--rerank-depth", "0",
        "--k", "10", "--remove-query-id", "--out", other,
    )  # fmt: skip
    return {"index": index, "run": run, "other": other, "out": folder / "out"}


def search(inputs: dict[str, Path], out: str, *flags: object) -> list[str]:
    base = [
        "search",
        "--index",
        inputs["index"],
        "--queries",
        QUERIES,
        "--mode",
        "bm25",
        "--rerank-depth",
        "0",
    ]
    return [str(part) for part in (*base, "--out", inputs["out"] / out, *flags)]


def fuse(inputs: dict[str, Path], out: str, *flags: object) -> list[str]:
    return [
        str(part) for part in ("fuse", inputs["run"], inputs["other"], "--out", inputs["out"] / out, *flags)
    ]


def compare(inputs: dict[str, Path], *flags: object) -> list[str]:
    return [str(part) for part in ("compare", QRELS, inputs["run"], inputs["other"], *flags)]


def tune(inputs: dict[str, Path], out: str, *flags: object) -> list[str]:
    base = ["tune", "--index", inputs["index"], "--queries", QUERIES, "--qrels", QRELS, "--mode", "bm25"]
    return [str(part) for part in (*base, "--rerank-depth", "0", "--out", inputs["out"] / out, *flags)]


def reproductions(inputs: dict[str, Path]) -> dict[str, list[str]]:
    """The issue's reproductions, and the reference run a capped search must equal."""
    weights = ["--fusion", "linear", "--normalization", "none", "--weights"]
    return {
        "capped": search(inputs, "capped.run", "--depth", HUGE, "--k", HUGE),
        "reference": search(inputs, "reference.run", "--depth", DOCUMENTS, "--k", DOCUMENTS, "-q"),
        "weights_beyond_floats": fuse(inputs, "inf.run", *weights, "1e308,1e308"),
        "fused_beyond_floats": fuse(inputs, "overflow.run", *weights, "1.5e308,0"),
        "weights_all_zero": fuse(inputs, "zero.run", "--fusion", "linear", "--weights", "0,0"),
        "rrf_k_beyond_int64": fuse(inputs, "rrf.run", "--rrf-k", 10**29),
        "samples": compare(inputs, "--samples", 200_000_000),
        "tune_depth": tune(inputs, "depth.json", "--grid", f"depth=100,{HUGE}", "--grid", "k=10"),
        "tune_grid": tune(inputs, "grid.json", "--grid", "weight=0:1:0.001", "--grid", "rrf-k=1:1000:1"),
    }


def absurd_values(annotation: object) -> list[str]:
    """Values no one means, for an option of this type: beyond int64 for integers, beyond or outside the
    floats for floats; nothing for other types."""
    kinds = set(typing.get_args(annotation)) or {annotation}
    if int in kinds:
        return [str(10**12), str(2**70)]
    if float in kinds:
        return ["1e308", "inf", "-inf", "nan"]
    return []


def numeric_options() -> list[tuple[str, str, str]]:
    """(command, option, value) for every numeric option of the commands' option groups."""
    groups = {
        "search": (SearchOptions, RerankOptions, CacheOptions, AggregationOptions),
        "fuse": (FuseOptions,),
        "compare": (CompareOptions,),
        "tune": (TuneOptions,),
    }
    cases = []
    for command, group_types in groups.items():
        for group in group_types:
            hints = typing.get_type_hints(group)
            for field in dataclasses.fields(group):
                spec = option_spec(field)
                if spec is not None and spec.cli:
                    cases += [(command, field.name, value) for value in absurd_values(hints[field.name])]
    return sorted(set(cases))


def walk_case(inputs: dict[str, Path], command: str, name: str, value: str) -> list[str]:
    flags = ["-q", flag_of(name), value]
    if command == "search":
        return search(inputs, f"walk-{name}.run", *flags)
    if command == "fuse":
        return fuse(inputs, f"walk-{name}.run", *flags)
    if command == "compare":
        return compare(inputs, *flags)
    return tune(inputs, f"walk-{name}.json", "--grid", "k=10,20", *flags)


@pytest.fixture(scope="module")
def results(inputs: dict[str, Path]) -> dict[str, subprocess.CompletedProcess[str]]:
    inputs["out"].mkdir()
    cases = reproductions(inputs)
    for command, name, value in numeric_options():
        cases[f"{command} {name} {value}"] = walk_case(inputs, command, name, value)
    cases["eval cutoff"] = ["eval", str(QRELS), str(inputs["run"]), "--measures", f"nDCG@{10**12}", "-q"]
    return run_limited(cases)


@pytest.mark.slow
def test_depth_and_k_beyond_the_corpus_search_all_of_it_with_one_notice(results, inputs) -> None:
    capped = results["capped"]
    assert capped.returncode == 0, capped.stderr
    notices = [line for line in capped.stderr.splitlines() if "more than" in line]
    assert notices == [
        f"depth {HUGE} and k {HUGE} are more than the {DOCUMENTS} documents of {inputs['index']}; "
        f"searching all {DOCUMENTS}"
    ]
    out = inputs["out"]
    assert results["reference"].returncode == 0, results["reference"].stderr
    assert (out / "capped.run").read_bytes() == (out / "reference.run").read_bytes()


@pytest.mark.parametrize(
    ("case", "output", "fragments"),
    [
        ("weights_beyond_floats", "inf.run", ["--weights 1e308,1e308", "sum beyond the float range"]),
        ("fused_beyond_floats", "overflow.run", ["--weights", "fused scores beyond the float range"]),
        ("weights_all_zero", "zero.run", ["--weights 0,0", "all zero"]),
        ("rrf_k_beyond_int64", "rrf.run", ["--rrf-k", "must be at most 1e+06"]),
        ("samples", None, ["--samples 200000000", "must be at most 1e+06"]),
        ("tune_grid", "grid.json", ["--grid", "1,001,000 combinations (at most 100,000)"]),
    ],
)
def test_numbers_no_one_means_are_refused_in_one_line_and_write_nothing(
    results, inputs, case: str, output: str | None, fragments: list[str]
) -> None:
    one_line_error(results[case], *fragments)
    assert output is None or not (inputs["out"] / output).exists()


def test_fused_scores_are_never_written_beyond_the_float_range(results, inputs) -> None:
    written = [read_run(path) for path in inputs["out"].glob("*.run")]
    assert written and all(
        abs(score) < float("inf") for run in written for docs in run.values() for score in docs.values()
    )


def test_a_tune_grid_beyond_the_corpus_is_capped_with_one_notice(results, inputs) -> None:
    tuned = results["tune_depth"]
    assert tuned.returncode == 0, tuned.stderr
    notices = [line for line in tuned.stderr.splitlines() if "more than" in line]
    assert notices == [
        f"depth {HUGE} is more than the {DOCUMENTS} documents of {inputs['index']}; searching all {DOCUMENTS}"
    ]
    assert "first stages: 2 distinct" in tuned.stderr  # depth 100, and every document


@pytest.mark.parametrize(("command", "name", "value"), numeric_options())
def test_every_numeric_option_refuses_or_caps_an_absurd_value(results, command, name, value) -> None:
    result = results[f"{command} {name} {value}"]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        one_line_error(result, flag_of(name))


def test_an_absurd_measure_cutoff_is_evaluated_without_allocating_it(results) -> None:
    result = results["eval cutoff"]
    assert result.returncode == 0, result.stderr
    assert f"nDCG@{10**12}" in result.stdout


TIGHT = """
import resource, sys
import psutil
import lyre.cli.experiment_commands, lyre.retrieval.compare, lyre.retrieval.sizes  # imported before the limit
from lyre.cli.app import main

room = psutil.Process().memory_info().vms + (40 << 20)
resource.setrlimit(resource.RLIMIT_AS, (room, resource.RLIM_INFINITY))
sys.argv = ["lyre", *sys.argv[1:]]
main()
"""
"""``lyre`` with 40 MiB of address space left after its imports, as a job under a tight ``ulimit -v``."""


@pytest.mark.slow
def test_resamples_that_would_not_fit_are_refused_before_they_are_drawn(inputs) -> None:
    """The resampled means and one block of draws take more than 40 MiB: one line names the samples, the
    memory they need and the memory available, before any run is read."""
    argv = compare(inputs, "--samples", 1_000_000)
    result = subprocess.run(
        [sys.executable, "-c", TIGHT, *argv], capture_output=True, text=True, cwd=REPOSITORY
    )
    line = one_line_error(
        result, "--samples 1000000: the resampled means would need about 71.6 MiB of memory"
    )
    assert line.endswith("is available; lower it")
