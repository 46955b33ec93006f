"""Status lines (basics/progress.py): silenced by --quiet, and a problem lyre works around names its
options as the command line gives them."""

from __future__ import annotations

import pytest
from lyre.basics import progress
from lyre.basics.errors import LyreError, opt


@pytest.fixture(autouse=True)
def loud(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with status lines on and options named as parameters."""
    monkeypatch.setattr(progress, "_quiet", False)
    monkeypatch.setattr(progress, "_option_name", str)


def test_a_worked_around_problem_names_its_options_as_set(capsys: pytest.CaptureFixture[str]) -> None:
    error = LyreError(f"no reranker here; pass {opt('rerank_model')} DIR")
    progress.say_error("serving without reranking", error)
    progress.set_option_names(lambda name: "--" + name.replace("_", "-"))
    progress.say_error("serving without reranking", error)
    assert capsys.readouterr().err.splitlines() == [
        "serving without reranking: no reranker here; pass rerank_model DIR",
        "serving without reranking: no reranker here; pass --rerank-model DIR",
    ]


def test_quiet_silences_status_lines(capsys: pytest.CaptureFixture[str]) -> None:
    progress.set_quiet(True)
    progress.say("encoding")
    progress.say_error("skipped", LyreError("a problem"))
    progress.set_quiet(False)
    assert capsys.readouterr().err == ""
