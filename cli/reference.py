"""The CLI reference (``docs/cli.md``), generated from the app itself so it cannot drift from the flags.

``python -m lyre.cli.reference > docs/cli.md`` writes it; ``tests/test_cli_reference.py`` fails when the
file differs from what the app generates, so a changed flag, default or help text updates the reference
in the same commit.
"""

from __future__ import annotations

from typing import Any

import typer
from lyre.cli.app import build_app

HEADER = """# CLI reference

Generated from the app by `python -m lyre.cli.reference > docs/cli.md` (a test checks it is current).
`lyre CMD --help` shows the same, grouped in panels. Ranges and choices are checked before any work;
a value out of range is one `error:` line naming the flag.
"""


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


# Typer (0.29) builds its commands on its own copy of Click: parameters are read by their attributes.


def _is_flag(param: Any) -> bool:
    return param.param_type_name == "option" and bool(param.is_flag)


def _value(param: Any, context: typer.Context) -> str:
    return "flag" if _is_flag(param) else param.display_type(context).strip("<>").lower()


def _default(param: Any) -> str:
    if param.required:
        return "required"
    default: Any = param.default
    if _is_flag(param):
        return "on" if default else "off"
    if default is None or default == () or default == []:
        return ""
    return f"`{default}`"


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}`"
    return ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])


def command_section(name: str, command: Any) -> str:
    """One command's usage line, description and table of parameters (hidden ones left out)."""
    context = typer.Context(command, info_name=f"lyre {name}")
    usage = " ".join(command.collect_usage_pieces(context))
    lines = [f"## lyre {name}", "", f"`lyre {name} {usage}`", "", _cell(command.help or ""), ""]
    rows = [param for param in command.params if not getattr(param, "hidden", False)]
    panels: dict[str, list[Any]] = {"Arguments": [], "Options": []}  # first, as in --help
    for param in rows:
        default = "Arguments" if param.param_type_name == "argument" else "Options"
        panels.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(param)
    for panel, params in ((panel, params) for panel, params in panels.items() if params):
        lines += [f"**{panel}**", "", "| name | value | default | what it does |", "|---|---|---|---|"]
        for param in params:
            help_text = _cell(getattr(param, "help", None) or "")
            lines.append(f"| {_names(param)} | {_value(param, context)} | {_default(param)} | {help_text} |")
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """The whole reference: the global options, then every command in the app's order."""
    group: Any = typer.main.get_command(build_app())
    sections = [command_section(name, command) for name, command in group.commands.items()]
    return HEADER + "\n" + "\n".join(sections)


if __name__ == "__main__":
    print(reference(), end="")
