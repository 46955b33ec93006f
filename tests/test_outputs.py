"""The guarded writer: an output may not replace an input (through any spelling or link), lie inside the
index, hold an input, be another output or an existing folder; files are published together or not at
all, and a failed write names the option that chose the path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from lyre.basics.errors import OptionError
from lyre.basics.outputs import Output, Outputs, Source, output
from lyre.basics.resources import ResourceError


@pytest.fixture
def inputs(tmp_path: Path) -> list[Source]:
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\ttext\n")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("{}")
    return [Source("queries file", queries), Source("index", tmp_path / "index", contents=True)]


def refusal(out: Output) -> OptionError:
    with pytest.raises(OptionError) as caught:
        out.check()
    return caught.value


def test_a_path_apart_from_every_input_is_accepted(tmp_path: Path, inputs: list[Source]) -> None:
    output(tmp_path / "runs" / "a.run").guarding(inputs, [tmp_path / "runs" / "a.run.meta.json"])


def test_an_input_file_another_spelling_or_a_link_included_is_refused(
    tmp_path: Path, inputs: list[Source]
) -> None:
    spelled = Output(tmp_path / "index" / ".." / "queries.tsv", sources=tuple(inputs))
    error = refusal(spelled)
    assert error.option == "out" and "is the queries file" in str(error)
    (tmp_path / "link").symlink_to(tmp_path / "queries.tsv")
    assert "is the queries file" in str(refusal(Output(tmp_path / "link", sources=tuple(inputs))))
    os.link(tmp_path / "queries.tsv", tmp_path / "hard")
    assert "is the queries file" in str(refusal(Output(tmp_path / "hard", sources=tuple(inputs))))


def test_anything_inside_the_index_folder_is_refused(tmp_path: Path, inputs: list[Source]) -> None:
    for inside in (tmp_path / "index" / "manifest.json", tmp_path / "index" / "new.run"):
        assert "lies inside the index" in str(refusal(Output(inside, sources=tuple(inputs))))


def test_a_folder_output_holding_an_input_is_refused(tmp_path: Path, inputs: list[Source]) -> None:
    index = Output(tmp_path, what="index", folder=True, sources=tuple(inputs))
    assert f"holds the queries file {tmp_path / 'queries.tsv'}" in str(refusal(index))


def test_a_companion_file_over_an_input_is_refused(tmp_path: Path, inputs: list[Source]) -> None:
    sidecar = tmp_path / "queries.tsv"
    with pytest.raises(OptionError, match=f"{sidecar} \\(written with it\\) is the queries file"):
        output(tmp_path / "q.run").guarding(inputs, [sidecar])


def test_an_existing_folder_is_refused_and_named_by_its_option(tmp_path: Path, inputs: list[Source]) -> None:
    (tmp_path / "runs").mkdir()
    error = refusal(Output(tmp_path / "runs", "plot", "plot", sources=tuple(inputs)))
    assert error.option == "plot" and "is an existing folder" in str(error)


def test_two_outputs_of_one_command_may_not_share_a_path(tmp_path: Path) -> None:
    declared = Outputs.declare(
        [], [Output(tmp_path / "x", "out"), Output(tmp_path / "." / "x", "plot", "plot")], wait=False
    )
    with pytest.raises(OptionError, match="is also where plot is written"):
        declared.check()


def test_irds_ids_are_not_paths_an_output_could_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    output("irds:beir/scifact/test").guarding([Source("qrels", Path("irds:beir/scifact/test"))])


def test_files_published_together_or_not_at_all(tmp_path: Path) -> None:
    run, sidecar = tmp_path / "x.run", tmp_path / "x.run.meta.json"
    run.write_text("old run\n")
    sidecar.write_text("old sidecar\n")
    target = output(run)
    with pytest.raises(RuntimeError), target.publishing(run, sidecar) as (run_tmp, sidecar_tmp):
        run_tmp.write_text("new run\n")
        sidecar_tmp.write_text("new sidecar\n")
        raise RuntimeError("stopped before publishing")
    assert (run.read_text(), sidecar.read_text()) == ("old run\n", "old sidecar\n")
    with target.publishing(run, sidecar) as (run_tmp, sidecar_tmp):
        run_tmp.write_text("new run\n")
        sidecar_tmp.write_text("new sidecar\n")
    assert (run.read_text(), sidecar.read_text()) == ("new run\n", "new sidecar\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["x.run", "x.run.meta.json"]


def test_a_failed_write_names_the_option_of_the_output(tmp_path: Path) -> None:
    plot = Output(tmp_path / "plot.png", "plot", "plot")
    with pytest.raises(ResourceError) as caught, plot.publishing():
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value).endswith("free space there, or choose another plot")
    assert not list(tmp_path.iterdir())


def test_a_failed_command_leaves_no_folder_it_created(tmp_path: Path) -> None:
    target = output(tmp_path / "new" / "deeper" / "x.run")
    with pytest.raises(RuntimeError), target.claimed():
        assert (tmp_path / "new" / "deeper").is_dir()
        raise RuntimeError("bad queries")
    assert not (tmp_path / "new").exists()
