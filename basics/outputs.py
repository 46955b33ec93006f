"""One output path: every file a command writes is declared, checked before any work, locked, published.

A run written over its own query file, qrels, input run, settings file or the index it searched destroys
what the user needs to redo the work, and nothing downstream would notice; two commands writing the same
``--out`` at once can leave a run from one and a sidecar from the other. So a command never opens an output
itself: it declares its inputs (:class:`Source`) and the paths it writes (:class:`Output`, with the files
written beside it such as ``RUN.meta.json`` and ``RUN.parts/``), and writes through :meth:`Output.publishing`.

- :meth:`Output.check` runs before any input is read: an output (or a file written with it) that is an
  input (through any spelling or link), lies inside a folder input (the index), holds an input, is another
  output of the command, or is an existing folder, is an :class:`~basics.errors.OptionError` on the option
  that named it (``out``, ``plot``).
- :meth:`Output.claimed` holds the output's lock (:func:`basics.lock.output_lock`) from the checks to the
  end: a second command writing the same path is refused naming the holder, or waits with ``wait``.
- :meth:`Output.publishing` writes every file to a temporary name and renames them together under that
  lock (:func:`basics.atomic.atomic_paths`): a failed write (disk full, read-only) is one line naming the
  option, and leaves what was there before.

Commands declare their paths in annotations: :class:`Reads` or :class:`Writes` on each path parameter
(``cli/common.py``) or path field of an options group. The command line collects them into one
:class:`Outputs` (:func:`cli.flags.flags_from_options`), checks it before the command runs, and hands it
to the library, which adds what only it knows (the companions) with :meth:`Output.guarding`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics.atomic import atomic_paths, json_text
from lyre.basics.declared import option
from lyre.basics.errors import OptionError, opt
from lyre.basics.lock import output_lock

IRDS_PREFIX = "irds:"


@dataclass(frozen=True)
class OutputOptions:
    """How a command meets another one writing the same output (or the index it uses)."""

    wait: bool = option(
        False,
        "When another lyre command is writing the same output (or the index folder), wait for it instead "
        "of stopping.",
    )


@dataclass(frozen=True)
class Reads:
    """Annotation of a path a command reads: ``what`` names it in messages (``queries file``);
    ``contents``: a folder whose files are all read (an index), so nothing may be written inside it."""

    what: str
    contents: bool = False


@dataclass(frozen=True)
class Writes:
    """Annotation of a path a command writes: ``what`` names it in messages (``run``, ``plot``);
    ``folder``: a folder written by its own runner under its own lock (an index), so only its inputs are
    checked here."""

    what: str
    folder: bool = False


@dataclass(frozen=True)
class Source:
    """A declared input: ``what`` it is in messages (``queries file``), its path, and whether it is a
    folder all of whose files are read (an index: nothing may be written inside it)."""

    what: str
    path: Path
    contents: bool = False

    def on_disk(self) -> bool:
        """An ``irds:`` id names a dataset in ir_datasets' home, not a path an output could replace."""
        return not str(self.path).startswith(IRDS_PREFIX)


def _same(first: Path, second: Path) -> bool:
    """The same file: one resolved path, or (both existing) one inode, which also catches hard links and
    case-insensitive file systems."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _conflict(written: Path, source: Source) -> str | None:
    """How writing ``written`` would damage ``source`` (None: it would not)."""
    target, read = written.resolve(), source.path.resolve()
    if _same(written, source.path):
        return f"is the {source.what} {source.path}"
    if source.contents and read in target.parents:
        return f"lies inside the {source.what} {source.path}"
    if target in read.parents:
        return f"holds the {source.what} {source.path}"
    return None


def _nested(first: Path, second: Path) -> bool:
    """One path, or one inside the other."""
    one, two = first.resolve(), second.resolve()
    return _same(first, second) or one in two.parents or two in one.parents


@dataclass(frozen=True)
class Output:
    """One path a command writes, named by the option ``option``, and the one way to write it.

    ``what`` names it in messages (``run``, ``plot``). ``companions`` are written with it (a run's sidecar
    and work folder); ``folder``: the output is a folder written by its own runner (an index), so only its
    inputs are checked here. ``sources`` are the command's inputs and ``others`` its other outputs, none of
    which it may replace; ``wait``: wait for another writer of the same path instead of stopping.
    """

    path: Path
    option: str = "out"
    what: str = "output"
    companions: tuple[Path, ...] = ()
    folder: bool = False
    sources: tuple[Source, ...] = ()
    others: tuple[Output, ...] = ()
    wait: bool = False

    def guarding(self, sources: Iterable[Source] = (), companions: Iterable[Path] = ()) -> Output:
        """This output with more ``sources`` and ``companions``, checked (:meth:`check`)."""
        more = dataclasses.replace(
            self, sources=(*self.sources, *sources), companions=(*self.companions, *companions)
        )
        more.check()
        return more

    def check(self) -> None:
        """Refuse this output before any work when writing it could replace or mix with something read or
        written by the same command (see the module docstring)."""
        if not self.folder and self.path.is_dir():
            self._refuse("is an existing folder; give the path of a file to write")
        for written in (self.path, *self.companions):
            subject = "" if written == self.path else f"{written} (written with it) "
            for source in self.sources:
                problem = _conflict(written, source) if source.on_disk() else None
                if problem is not None:
                    self._refuse(f"{subject}{problem}; write the {self.what} somewhere else")
            for other in self.others:
                if _nested(written, other.path):
                    self._refuse(f"{subject}is also where {opt(other.option)} is written; give two paths")

    def _refuse(self, problem: str) -> None:
        raise OptionError(self.option, self.path, problem)

    @contextlib.contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold this output's lock for the block: from the checks, through the work, to the publishing."""
        with output_lock(self.path, wait=self.wait, option=self.option):
            yield

    @contextlib.contextmanager
    def publishing(self, *finals: Path) -> Iterator[list[Path]]:
        """One temporary path for each of ``finals`` (the output and the files written with it; default:
        the output alone), renamed onto them together under the output's lock once the block succeeds."""
        with self.claimed(), atomic_paths(finals or (self.path,), self.option) as temps:
            yield temps

    def write_text(self, text: str) -> None:
        with self.publishing() as (tmp,):
            tmp.write_text(text, encoding="utf-8")

    def write_json(self, record: Any) -> None:
        self.write_text(json_text(record))


def output(path: str | Path | Output, option: str = "out", what: str = "output") -> Output:
    """``path`` as an :class:`Output` (a library function called with a plain path still writes through
    the guarded writer, checked against the inputs it declares itself)."""
    return path if isinstance(path, Output) else Output(Path(path), option, what)


@dataclass(frozen=True)
class Outputs:
    """The outputs of one command, each bound to every input and to the others, as the command's
    parameters declare them (``cli/common.py``)."""

    outputs: tuple[Output, ...] = ()

    @classmethod
    def declare(cls, sources: Sequence[Source], outputs: Sequence[Output], wait: bool = False) -> Outputs:
        bound = tuple(
            dataclasses.replace(
                out,
                sources=(*out.sources, *sources),
                others=tuple(other for other in outputs if other is not out),
                wait=wait,
            )
            for out in outputs
        )
        return cls(bound)

    def check(self) -> None:
        for out in self.outputs:
            out.check()

    def get(self, option_name: str) -> Output | None:
        """The output named by option ``option_name``; None when that option was not given."""
        return next((out for out in self.outputs if out.option == option_name), None)

    def file(self, option_name: str) -> Output:
        """The output named by the required option ``option_name``."""
        found = self.get(option_name)
        if found is None:
            raise KeyError(f"no output is declared for {option_name!r}")
        return found
