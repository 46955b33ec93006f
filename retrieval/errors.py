"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations

from pathlib import Path


class LyreError(Exception):
    """A problem with the user's input or environment, explained in one line with what to do."""

    exit_code = 2


class InputError(LyreError):
    """Bad content in an input file, located as ``file:line``."""

    def __init__(self, path: str | Path, line: int | None, problem: str, fix: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}; {fix}")
