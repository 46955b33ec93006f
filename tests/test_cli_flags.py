"""The flag maker (``cli/flags.py``): options groups become flags with their defaults, help and panels;
shared names are declared, any other repeated name is refused when the command is defined; renamed
fields keep a hidden former flag; on/off fields are flags that take no value. The last tests pin the
Typer behaviour the flag maker relies on, so a Typer release that changes it fails here first."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Any

import pytest
import typer
from helpers import REPOSITORY
from lyre.basics.declared import option
from lyre.basics.errors import LyreError
from lyre.cli.app import LyreCommand, build_app
from lyre.cli.flags import PANELS, SHARED, FlagClash, declared_fields, flags_from_options, panel_of
from typer.testing import CliRunner

RUNNER = CliRunner()


@dataclass(frozen=True)
class Shape:
    """Two settings of a made-up command."""

    depth: int = option(10, "How deep.", minimum=1)
    style: str = option("plain", "How it looks.", choices=("plain", "fancy"))
    hidden_default: int = option(3, "Filled in by the command.", cli=False)


@dataclass(frozen=True)
class Extra:
    loud: bool = option(False, "Say more.")
    overwrite: bool = option(False, "Redo the shape.")


@dataclass(frozen=True)
class Other:
    overwrite: bool = option(False, "Redo the other part.")


@dataclass(frozen=True)
class OtherShape:
    depth: int = option(5, "Another depth.")


@dataclass(frozen=True)
class StringOverwrite:
    overwrite: str = option("no", "Not an on/off setting.")


def app_of(command: Any) -> typer.Typer:
    """A one-command app like lyre's (with a callback, so the command keeps its name)."""
    app = typer.Typer(add_completion=False)
    app.callback()(lambda: None)
    app.command("run", cls=LyreCommand)(command)
    return app


def record(seen: list[Any]) -> Any:
    """A command with both groups that keeps what it was handed."""

    @flags_from_options
    def run(shape: Shape, extra: Extra, other: Other, name: str = "x") -> None:
        seen.append((shape, extra, other, name))

    return run


def invoke(command: Any, *args: str) -> Any:
    result = RUNNER.invoke(app_of(command), ["run", *args])
    assert result.exit_code == 0, result.output
    return result


def test_each_group_becomes_its_flags_and_the_command_gets_built_instances() -> None:
    seen: list[Any] = []
    invoke(record(seen), "--depth", "7", "--style", "fancy", "--loud", "--name", "y")
    shape, extra, other, name = seen[0]
    assert shape == Shape(depth=7, style="fancy") and extra == Extra(loud=True) and name == "y"
    assert other == Other()


@pytest.mark.slow
def test_defaults_are_the_declared_ones_and_a_field_not_for_the_cli_has_no_flag() -> None:
    seen: list[Any] = []
    command = record(seen)
    invoke(command)
    assert seen[0][:3] == (Shape(), Extra(), Other())
    result = RUNNER.invoke(app_of(command), ["run", "--hidden-default", "4"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_help_shows_each_field_with_its_range_or_choices_in_the_panel_of_its_group() -> None:
    text = RUNNER.invoke(app_of(record([])), ["run", "--help"], terminal_width=200).output
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels == ["Options", "Shape", "Extra", "Every stage"]
    assert "How deep. (>= 1)" in text and "How it looks. (one of plain, fancy)" in text
    assert "[default: 10]" in text and "[default: plain]" in text


def test_on_off_fields_are_flags_shown_without_a_value() -> None:
    text = RUNNER.invoke(app_of(record([])), ["run", "--help"], terminal_width=200).output
    assert "<bool>" not in text
    assert re.search(r"--loud\s+Say more\.", text) and re.search(r"--depth\s+<int>", text)


def test_a_shared_name_is_one_flag_setting_every_group() -> None:
    seen: list[Any] = []
    command = record(seen)
    invoke(command, "--overwrite")
    invoke(command)
    (_, on, other_on, _), (_, off, other_off, _) = seen
    assert on.overwrite and other_on.overwrite and not off.overwrite and not other_off.overwrite
    params = typer.main.get_command(app_of(command)).commands["run"].params  # type: ignore[attr-defined]
    assert [p.opts for p in params].count(["--overwrite"]) == 1


def test_a_name_two_groups_declare_is_refused_when_the_command_is_defined() -> None:
    def clash(shape: Shape, other: OtherShape) -> None:
        """Both groups declare ``depth``, and ``depth`` is not declared as shared."""

    with pytest.raises(FlagClash, match=r"clash: --depth is declared by Shape, OtherShape; one flag"):
        flags_from_options(clash)


def test_a_field_named_like_a_parameter_of_the_command_is_refused() -> None:
    def clash(shape: Shape, depth: int = 1) -> None:
        """``--depth`` would be both the parameter and the field."""

    with pytest.raises(FlagClash, match="--depth is both a parameter and a field of Shape"):
        flags_from_options(clash)


def test_a_shared_name_must_mean_the_same_type_and_default_in_every_group() -> None:
    def clash(extra: Extra, other: StringOverwrite) -> None:
        """``overwrite`` is shared, but one group makes it a string."""

    with pytest.raises(FlagClash, match="shared --overwrite has another type or default"):
        flags_from_options(clash)


def test_sharing_is_declared_not_assumed() -> None:
    """Without ``overwrite`` among the shared names, the same two groups are refused."""

    def run(extra: Extra, other: Other) -> None:
        """Both declare ``overwrite``."""

    assert "overwrite" in SHARED
    flags_from_options(run)
    with pytest.raises(FlagClash, match="--overwrite is declared by Extra, Other"):
        flags_from_options(run, shared={})


@dataclass(frozen=True)
class Sliced:
    slice_id: int | None = option(None, "Which slice.", minimum=0)
    verbose: bool = option(False, "Talk.")


def renamed(seen: list[Any]) -> Any:
    """A command whose fields ``slice_id`` and ``verbose`` were called ``shard_id`` and ``chatty``."""

    def run(sliced: Sliced) -> None:
        seen.append(sliced)

    return flags_from_options(run, former_names={"slice_id": "shard_id", "verbose": "chatty"})


def test_a_former_name_still_works_hidden_from_help_with_a_note() -> None:
    seen: list[Any] = []
    command = renamed(seen)
    old = invoke(command, "--shard-id", "3", "--chatty")
    new = invoke(command, "--slice-id", "4")
    assert (seen[0].slice_id, seen[0].verbose, seen[1].slice_id, seen[1].verbose) == (3, True, 4, False)
    assert "note: --shard-id is now --slice-id" in old.stderr and "--chatty is now --verbose" in old.stderr
    assert "note:" not in new.stderr
    text = RUNNER.invoke(app_of(command), ["run", "--help"], terminal_width=200).output
    assert "--slice-id" in text and "--shard-id" not in text and "--chatty" not in text


def test_a_former_name_and_the_new_one_together_are_refused() -> None:
    result = RUNNER.invoke(app_of(renamed([])), ["run", "--shard-id", "3", "--slice-id", "4"])
    assert isinstance(result.exception, LyreError)
    assert str(result.exception) == "shard_id is the former name of slice_id; give only slice_id"


def test_a_former_name_in_use_is_refused() -> None:
    def run(shape: Shape, name: str = "x") -> None:
        """``--name`` cannot also be the former name of ``--depth``."""

    with pytest.raises(FlagClash, match="former name --name of --depth is in use"):
        flags_from_options(run, former_names={"depth": "name"})


def test_panels_follow_the_class_that_declares_each_field() -> None:
    from lyre.retrieval.options import SearchOptions

    fields = {d.name: d for d in declared_fields(SearchOptions)}
    assert panel_of(Shape) == "Shape" and panel_of(type("DenseFeedbackOptions", (), {})) == "Dense feedback"
    app = typer.main.get_command(build_app(("search",)))
    panels = {p.name: p.rich_help_panel for p in app.commands["search"].params}  # type: ignore[attr-defined]
    assert {panels[name] for name in ("tag", "k")} == {"Run file"} and panels["rrf_k"] == "Fusion"
    assert panels["mode"] == "Search" and panels["rerank_depth"] == "Rerank" and panels["wait"] == "Locking"
    assert panels["index"] == "Inputs and outputs" and set(fields) <= set(panels)


def test_every_flag_of_every_command_made_from_a_group_is_in_a_named_panel() -> None:
    app = typer.main.get_command(build_app())
    classes: set[str] = set()
    for command in app.commands.values():  # type: ignore[attr-defined]
        groups = command.callback.option_groups
        fields = {d.name for group in groups.values() for d in declared_fields(group)}
        panels = {param.name: param.rich_help_panel for param in command.params}
        assert all(panels[name] not in (None, "Options") for name in fields), command.name
        classes |= {cls.__name__ for group in groups.values() for cls in group.__mro__}
    assert set(PANELS) <= classes, f"PANELS names classes no command uses: {set(PANELS) - classes}"


def test_no_flag_of_any_command_shows_a_bool_value() -> None:
    for name in ("index", "search", "eval", "serve"):
        text = RUNNER.invoke(build_app((name,)), [name, "--help"], terminal_width=200).output
        assert "--" in text and "<bool>" not in text, name


# What the flag maker relies on in Typer; a release that changes any of it fails here, loudly.


def test_the_installed_typer_is_inside_the_bound_pyproject_declares() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
    bound = next(d for d in project["project"]["dependencies"] if d.startswith("typer"))
    low, high = re.fullmatch(r"typer>=([\d.]+),<([\d.]+)", bound).groups()  # type: ignore[union-attr]

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])

    assert version(low) <= version(metadata.version("typer")) < version(high)


def test_typer_reads_the_signature_the_flag_maker_writes() -> None:
    """Typer builds a command's parameters from ``__signature__`` and ``__annotations__`` (with
    ``__wrapped__`` removed): the flags, defaults, metavar, hidden flag and panel given there arrive."""
    command = typer.main.get_command(app_of(renamed([]))).commands["run"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    assert list(params) == ["slice_id", "verbose", "shard_id", "chatty"]
    assert params["slice_id"].opts == ["--slice-id"] and params["slice_id"].default is None
    assert params["verbose"].is_flag and params["verbose"].metavar == ""
    assert params["shard_id"].hidden and params["chatty"].hidden and params["chatty"].is_flag
    assert params["slice_id"].rich_help_panel == "Sliced" and params["shard_id"].rich_help_panel is None


def test_typer_shows_a_flag_type_unless_it_has_a_metavar() -> None:
    """The cause of ``--overwrite <bool>`` (Typer 0.29's ``display_type_rich``), and the fix."""

    def run(
        plain: Annotated[bool, typer.Option("--plain")] = False,
        fixed: Annotated[bool, typer.Option("--fixed", metavar="")] = False,
    ) -> None:
        """Two flags, one with an empty metavar."""

    command = typer.main.get_command(app_of(run)).commands["run"]  # type: ignore[attr-defined]
    context = typer.Context(command)
    shown = {p.name: p.display_type_rich(context) for p in command.params}
    assert shown == {"plain": "<bool>", "fixed": ""}


def test_typer_says_which_options_were_typed() -> None:
    """``lyre search --settings`` keeps the flags a user typed (``Context.get_parameter_source``)."""
    sources: dict[str, str] = {}

    @flags_from_options
    def run(context: typer.Context, shape: Shape) -> None:
        sources.update({name: context.get_parameter_source(name).name for name in ("depth", "style")})

    invoke(run, "--depth", "3")
    assert sources == {"depth": "COMMANDLINE", "style": "DEFAULT"}
