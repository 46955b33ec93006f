"""``docs/cli.md`` is what the app generates: a changed flag, default or help text must update it."""

from __future__ import annotations

import typer
from helpers import REPOSITORY
from lyre.cli.app import build_app
from lyre.cli.reference import reference


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (REPOSITORY / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == reference(), "docs/cli.md is stale: run `python -m lyre.cli.reference > docs/cli.md`"


def test_the_reference_names_every_command_and_every_visible_flag() -> None:
    text = reference()
    group = typer.main.get_command(build_app())
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"## lyre {name}\n" in text
        section = text.split(f"## lyre {name}\n", 1)[1].split("\n## lyre ", 1)[0]
        for param in command.params:
            if param.param_type_name == "argument":
                assert f"`{param.name.upper()}`" in section, (name, param.name)
            elif not param.hidden:
                for flag in param.opts:
                    assert f"`{flag}`" in section, (name, flag)
