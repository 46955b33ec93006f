"""Outputs never overwrite inputs: where a command may write, checked before it reads anything.

A run written over its own query file, qrels, input run or the index it searched destroys what the user
needs to redo the work, and nothing downstream would notice. Commands name their inputs and every path
they will write (the run, its sidecar, its work folder); a written path that is an input, lies inside
one (the index folder), or is an existing folder is an :class:`~basics.errors.OptionError` on ``out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lyre.basics.errors import OptionError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(
    out: Path, inputs: Sequence[tuple[str, Path]], companions: Sequence[Path] = (), option: str = "out"
) -> None:
    """Refuse ``out`` (and the ``companions`` written beside it) when any would replace an input.

    ``inputs`` are ``(what, path)`` pairs such as ``("queries file", queries)``; paths are compared after
    resolving links and ``..``, so another spelling of the same file is caught too."""
    if out.is_dir():
        raise OptionError(option, out, "is an existing folder; give the path of a file to write")
    for written in (out, *companions):
        target = written.resolve()
        for what, path in inputs:
            source = path.resolve()
            if _inside(target, source):
                where = "is" if target == source else "lies inside"
                subject = "" if written == out else f"{written} (written with it) "
                raise OptionError(
                    option, out, f"{subject}{where} the {what} {path}; write the output somewhere else"
                )
