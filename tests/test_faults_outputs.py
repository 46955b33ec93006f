"""Outputs never replace inputs, and two writers of one output never mix: issue 18, classes 1, 2 and 12.

Every command's path parameters are declared as read or written (``cli/common.py``); the walk below finds
them on the app itself, so a new command or a new path option is covered (or the walk fails, asking for a
declaration or a recipe). Each input is tried as each output, directly and through a symbolic link: the
command ends with one ``error:`` line naming the output's flag, exit 2, and every input byte-identical.

Refusals happen before any work, so the walk runs the real command line in this process (``main()``) in
milliseconds; the concurrency tests run real ``lyre`` processes against a real lock holder.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from helpers import REPOSITORY, LyreCli, bm25_index_and_run, one_line_error
from lyre.basics import progress
from lyre.basics.outputs import Reads, Writes
from lyre.cli.app import build_app, main
from lyre.formats.runs import meta_path, read_run


@dataclass(frozen=True)
class World:
    """Real inputs of every kind a command reads: a BM25 index of the sample, its queries and qrels, two
    runs, a settings file, and the corpus."""

    folder: Path
    corpus: Path
    index: Path
    queries: Path
    qrels: Path
    run: Path
    other_run: Path
    settings: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> World:
    folder = tmp_path_factory.mktemp("outputs")
    index, run = bm25_index_and_run(folder, lyre, sample)
    other = folder / "other.run"
    other.write_text(
        "".join(line.replace("lyre.bm25", "other") for line in run.read_text().splitlines(True)[:90])
    )
    paths = {name: folder / name for name in ("corpus.jsonl", "queries.tsv", "qrels.tsv")}
    for name, path in paths.items():
        path.write_bytes((sample / name).read_bytes())
    settings = folder / "s.json"
    settings.write_text(json.dumps({"lyre_settings": 1, "settings": {"k": 10}}))
    return World(
        folder, paths["corpus.jsonl"], index, paths["queries.tsv"], paths["qrels.tsv"], run, other, settings
    )


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_lyre(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`lyre ARGS` run through the console entry point in this process (exit code, stdout, stderr)."""
    monkeypatch.setattr(progress, "_quiet", False)  # `-q` sets it for the process; put it back after

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["lyre", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def refused(result: Result, *fragments: str | Path) -> str:
    """The one ``error:`` line of a refused command (exit 2, nothing on stdout), checked for ``fragments``."""
    completed = subprocess.CompletedProcess([], result.code, result.stdout, result.stderr)
    line = one_line_error(completed, *fragments)
    assert result.stdout == "", result.stdout
    return line


BM25 = ["--mode", "bm25", "--rerank-depth", "0"]
"""A search that needs no model."""

RECIPES: dict[str, Callable[[World, Path], tuple[dict[str, Any], list[str]]]] = {
    "ingest": lambda w, out: ({"corpus": w.corpus, "out": out / "index"}, []),
    "index": lambda w, out: ({"corpus": w.corpus, "out": out / "index"}, ["--bm25-only"]),
    "search": lambda w, out: (
        {
            "index": w.index,
            "queries": w.queries,
            "qrels": w.qrels,
            "settings": w.settings,
            "out": out / "x.run",
        },
        BM25,
    ),
    "rerank": lambda w, out: (
        {"index": w.index, "queries": w.queries, "run": w.run, "out": out / "x.run"},
        ["--rerank-model", "/no/such/reranker"],
    ),
    "fuse": lambda w, out: ({"runs": [w.run, w.other_run], "out": out / "x.run"}, []),
    "compare": lambda w, out: (
        {
            "qrels": w.qrels,
            "baseline": w.run,
            "runs": [w.other_run],
            "queries": w.queries,
            "plot": out / "x.png",
        },
        [],
    ),
    "tune": lambda w, out: (
        {"index": w.index, "queries": w.queries, "qrels": w.qrels, "out": out / "s.json"},
        ["--grid", "k=10,20", *BM25],
    ),
}
"""A command line of every command that reads and writes files (parameter name -> value, and more flags),
each one that runs to exit 0 as it is, but rerank's, whose model does not exist: every refusal of the walk
must come before a model is looked for."""


def commands() -> dict[str, Any]:
    return typer.main.get_command(build_app()).commands  # type: ignore[attr-defined]


def declared(command: Any) -> dict[str, Reads | Writes]:
    """The paths ``command`` declares; every command goes through :func:`cli.flags.flags_from_options`, which
    checks them before it runs."""
    assert hasattr(command.callback, "declared_paths"), (
        f"lyre {command.name}: decorate it with flags_from_options"
    )
    return command.callback.declared_paths


def _is_path(hint: Any) -> bool:
    """``Path``, ``Path | None``, ``list[Path]``, ``Annotated[...]`` of these: a parameter naming files."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint is Path or any(_is_path(arg) for arg in typing.get_args(hint))


def test_every_path_parameter_of_every_command_is_declared_read_or_written() -> None:
    for name, command in commands().items():
        hints = typing.get_type_hints(command.callback.__wrapped__, include_extras=True)
        paths = {param for param, hint in hints.items() if _is_path(hint)}
        assert paths == set(declared(command)), f"lyre {name}: declare {paths - set(declared(command))}"
        if next(cases(command), None) is not None:
            assert name in RECIPES, f"lyre {name} reads and writes files: add a recipe to this walk"


def argv(command: Any, values: dict[str, Any], extra: list[str]) -> list[str | Path]:
    """The command line giving each parameter in ``values`` (arguments in order, options by flag)."""
    words: list[str | Path] = [command.name]
    for param in command.params:
        if param.name not in values:
            continue
        value = values[param.name]
        given = value if isinstance(value, list) else [value]
        if param.param_type_name == "argument":
            words += given
        else:
            for item in given:
                words += [param.opts[0], item]
    return [*words, *extra, "-q"]


def snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def cases(command: Any) -> Iterator[tuple[str, str]]:
    """(output parameter, input parameter) pairs of ``command``."""
    roles = declared(command)
    for written, role in roles.items():
        if isinstance(role, Writes):
            yield from ((written, read) for read, other in roles.items() if isinstance(other, Reads))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_input_as_each_output_is_refused_directly_and_through_a_link(
    name: str, world: World, tmp_path: Path, run_lyre: Callable[..., Result]
) -> None:
    command = commands()[name]
    values, extra = RECIPES[name](world, tmp_path)
    pairs = list(cases(command))
    assert pairs, f"lyre {name}: a recipe for a command that declares no output and input pair"
    before = {path: snapshot(path) for path in vars(world).values() if path != world.folder}
    flags = {param.name: param.opts[0] for param in command.params if param.param_type_name == "option"}
    for written, read in pairs:
        for source in values[read] if isinstance(values[read], list) else [values[read]]:
            link = tmp_path / f"link-{written}-{read}-{source.name}"
            link.symlink_to(source)
            for given in (source, link):
                changed = {**values, written: given}
                line = refused(run_lyre(*argv(command, changed, extra)))
                shown = flags.get(written, written)
                assert line.startswith(f"error: {shown} {given}: "), line
                assert any(
                    words in line for words in ("is the ", "lies inside the ", "is an existing folder")
                ), line
    assert {path: snapshot(path) for path in before} == before


def test_compare_plot_over_a_run_or_the_qrels_is_refused_before_the_table(
    world: World, tmp_path: Path, run_lyre: Callable[..., Result]
) -> None:
    """The reproductions of class 1: `lyre compare QRELS A.run B.run --plot A.run` (or the qrels, or the
    baseline through a link) replaced the file with a picture and exited 0."""
    link = tmp_path / "baseline.png"
    link.symlink_to(world.run)
    compared = ["compare", world.qrels, world.run, world.other_run, "-q"]
    before = {path: path.read_bytes() for path in (world.run, world.other_run, world.qrels)}
    for plot, what in [
        (world.run, f"is the baseline run {world.run}"),
        (world.other_run, f"is the run {world.other_run}"),
        (world.qrels, f"is the qrels {world.qrels}"),
        (link, f"is the baseline run {world.run}"),
    ]:
        refused(run_lyre(*compared, "--plot", plot), f"--plot {plot}: {what}; write the plot somewhere else")
    blocked = world.run / "x.png"  # a file where a folder is needed: found before the table is printed
    refused(
        run_lyre(*compared, "--plot", blocked), "is a file where a folder is needed; choose another --plot"
    )
    assert {path: path.read_bytes() for path in before} == before


def test_a_settings_file_is_an_input_of_search(world: World, run_lyre: Callable[..., Result]) -> None:
    search = ["search", "--index", world.index, "--queries", world.queries, *BM25, "-q"]
    before = world.settings.read_bytes()
    refused(
        run_lyre(*search, "--settings", world.settings, "--out", world.settings),
        f"--out {world.settings}: is the settings file {world.settings}; write the run somewhere else",
    )
    assert world.settings.read_bytes() == before


def test_a_sidecar_over_an_input_is_refused(
    world: World, tmp_path: Path, run_lyre: Callable[..., Result]
) -> None:
    """The files written with a run count too: ``--out X`` when ``X.meta.json`` is an input run."""
    victim = tmp_path / "fused.run.meta.json"
    victim.write_bytes(world.other_run.read_bytes())
    refused(
        run_lyre("fuse", world.run, victim, "--out", tmp_path / "fused.run", "-q"),
        f"{victim} (written with it) is the input run {victim}",
    )
    assert victim.read_bytes() == world.other_run.read_bytes()


def test_an_index_out_holding_its_corpus_is_refused(tmp_path: Path, run_lyre: Callable[..., Result]) -> None:
    corpus = tmp_path / "data" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text('{"_id": "d1", "text": "one document"}\n')
    refused(run_lyre("index", corpus, "--out", tmp_path / "data", "--bm25-only", "-q"), "holds the corpus")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["corpus.jsonl"]


def test_a_value_from_a_settings_file_is_blamed_on_the_file_not_on_a_flag(
    world: World, tmp_path: Path, run_lyre: Callable[..., Result]
) -> None:
    settings = tmp_path / "bad.json"
    settings.write_text(json.dumps({"lyre_settings": 1, "settings": {"depth": 5, "k": 10}}))
    search = ["search", "--index", world.index, "--queries", world.queries, *BM25, "-q"]
    out = tmp_path / "x.run"
    refused(
        run_lyre(*search, "--settings", settings, "--out", out, "--k", "20"),
        f"error: depth 5 (from {settings}): is below --k 20",
        f"correct it in {settings}, or override it with --depth",
    )
    settings.write_text(json.dumps({"lyre_settings": 1, "settings": {"depth": 0}}))
    refused(run_lyre(*search, "--settings", settings, "--out", out), f"error: depth 0 (from {settings}): ")
    typed = refused(run_lyre(*search, "--settings", settings, "--out", out, "--depth", "0", "--k", "1"))
    assert typed.startswith("error: --depth 0: ") and str(settings) not in typed
    assert not out.exists()


HOLD_OUTPUT = """
import sys
from lyre.basics.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""
"""A program holding an output's lock, as a command writing it does, until a line arrives on its stdin."""


def consistent(run: Path) -> dict[str, Any]:
    """The sidecar of ``run``, checked to describe the run beside it: SHA-256, tag and line count."""
    sidecar = json.loads(meta_path(run).read_text())
    assert sidecar["sha256"] == hashlib.sha256(run.read_bytes()).hexdigest()
    lines = run.read_text().splitlines()
    assert {line.split()[5] for line in lines} == {sidecar["tag"]} and len(lines) == sidecar["lines"]
    return sidecar


@pytest.mark.slow
def test_a_second_writer_of_one_output_is_refused_naming_the_holder_or_waits(
    world: World, lyre: LyreCli, tmp_path: Path
) -> None:
    out = tmp_path / "same.run"
    search = ["-q", "search", "--index", world.index, "--queries", world.queries, *BM25, "--out", out]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(out)], cwd=REPOSITORY, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        one_line_error(
            lyre(*search, check=False),
            f"--out {out}: is being written by pid {holder.pid} on ",
            "; wait for it, or pass --wait",
        )
        assert not out.exists() and not meta_path(out).exists()
        waiting = subprocess.Popen(
            lyre.argv(*search[1:], "--wait", "--tag", "waited"), cwd=REPOSITORY, text=True,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert waiting.stderr is not None
        status = waiting.stderr.readline()  # printed just before it blocks on the lock
        assert f"is being written by pid {holder.pid} on " in status and "waiting until it finishes" in status
        assert waiting.poll() is None and not out.exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read()
    assert consistent(out)["tag"] == "waited"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.run", "same.run.meta.json"]


@pytest.mark.slow
def test_two_searches_racing_for_one_out_never_leave_a_run_and_a_sidecar_of_different_searches(
    world: World, lyre: LyreCli, tmp_path: Path
) -> None:
    """Class 2: two `lyre search --out same.run` at once, with different settings; before, 2 of 20 trials
    left the run of one and the sidecar of the other, both exiting 0."""
    out = tmp_path / "same.run"
    search = ["-q", "search", "--index", world.index, "--queries", world.queries, *BM25, "--out", out]
    variants = [["--k", "10", "--tag", "ten"], ["--k", "20", "--tag", "twenty"]]
    for trial in range(8):
        wait = ["--wait"] if trial % 2 else []
        racers = [
            subprocess.Popen(
                lyre.argv(*search, *variant, *wait), cwd=REPOSITORY, text=True, stderr=subprocess.PIPE
            )
            for variant in variants
        ]
        results = [(racer.wait(timeout=120), racer.stderr.read()) for racer in racers]  # type: ignore[union-attr]
        for code, stderr in results:
            if code != 0:
                assert not wait and code == 2 and stderr.count("\n") == 1, stderr
                assert f"--out {out}: is being written by pid " in stderr, stderr
        sidecar = consistent(out)
        k = {"ten": 10, "twenty": 20}[sidecar["tag"]]
        assert sidecar["settings"]["k"] == k and max(len(docs) for docs in read_run(out).values()) <= k
