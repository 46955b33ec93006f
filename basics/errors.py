"""Errors a user can fix. The CLI prints them as one line and exits with code 2, without a traceback.

Messages name options through :func:`opt` markers, never as flags: the library does not know how a
setting was given (a flag, a settings file, a keyword argument). ``str(error)`` shows the parameter name;
the CLI renders the marker as the flag of the command that is running.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPTION_MARK = re.compile(r"\{opt:([a-z][a-z0-9_]*)\}")


def opt(name: str) -> str:
    """Name the option ``name`` (a parameter name such as ``rerank_depth``) inside an error message."""
    return "{opt:" + name + "}"


class LyreError(Exception):
    """A problem with the user's input or environment, explained in one line with what to do."""

    exit_code = 2

    def options(self) -> list[str]:
        """The options this message names, in order."""
        return OPTION_MARK.findall(super().__str__())

    def render(self, flag: Callable[[str], str]) -> str:
        """The message with every option marker replaced by ``flag(name)``."""
        return OPTION_MARK.sub(lambda match: flag(match.group(1)), super().__str__())

    def __str__(self) -> str:
        return self.render(lambda name: name)


class OptionError(LyreError):
    """An option's value is out of range or unknown; raised before any work is done."""

    def __init__(self, option: str, value: Any, problem: str) -> None:
        self.option = option
        self.value = value
        super().__init__(f"{opt(option)} {value}: {problem}")


class InputError(LyreError):
    """Bad content in an input file, located as ``file:line``."""

    def __init__(self, path: str | Path, line: int | None, problem: str, fix: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}; {fix}")
