"""Outputs never overwrite inputs: the run, its sidecar or work folder may not replace what was read."""

from __future__ import annotations

from pathlib import Path

import pytest
from lyre.basics.errors import OptionError
from lyre.basics.outputs import check_output


@pytest.fixture
def inputs(tmp_path: Path) -> list[tuple[str, Path]]:
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\ttext\n")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("{}")
    return [("queries file", queries), ("index", tmp_path / "index")]


def test_a_path_apart_from_every_input_is_accepted(tmp_path: Path, inputs: list[tuple[str, Path]]) -> None:
    check_output(tmp_path / "runs" / "a.run", inputs, [tmp_path / "runs" / "a.run.meta.json"])


def test_an_input_file_another_spelling_included_is_refused(
    tmp_path: Path, inputs: list[tuple[str, Path]]
) -> None:
    with pytest.raises(OptionError) as caught:
        check_output(tmp_path / "index" / ".." / "queries.tsv", inputs)
    assert caught.value.option == "out" and "is the queries file" in str(caught.value)


def test_anything_inside_the_index_folder_is_refused(tmp_path: Path, inputs: list[tuple[str, Path]]) -> None:
    with pytest.raises(OptionError, match="lies inside the index"):
        check_output(tmp_path / "index" / "manifest.json", inputs)
    with pytest.raises(OptionError, match="lies inside the index"):
        check_output(tmp_path / "index" / "new.run", inputs)


def test_a_companion_file_over_an_input_is_refused(tmp_path: Path, inputs: list[tuple[str, Path]]) -> None:
    sidecar = tmp_path / "queries.tsv"
    with pytest.raises(OptionError, match=f"{sidecar} \\(written with it\\) is the queries file"):
        check_output(tmp_path / "q.run", inputs, [sidecar])


def test_an_existing_folder_is_refused(tmp_path: Path, inputs: list[tuple[str, Path]]) -> None:
    (tmp_path / "runs").mkdir()
    with pytest.raises(OptionError, match="is an existing folder"):
        check_output(tmp_path / "runs", inputs)
