"""Progress bars, status lines and the one progress-sink protocol, silenced in one place by ``--quiet``.

Library functions call :func:`bar` and :func:`say` instead of threading a ``quiet`` flag through every
call (a weak spot peers have). Everything goes to stderr so stdout stays clean for tables and JSON.

Work measured in tokens (encoding documents, scoring rerank pairs) reports through a :class:`ProgressSink`:
``tokenized`` when inputs are tokenized (their token count becomes known), ``advance`` when they are done.
The same two calls serve a bar in this process, a queue to a parent process and a counter inside a Ray
actor, so an engine or a model never needs to know where its progress goes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count, rate

_quiet = False
_option_name: Callable[[str], str] = str
"""How a status line names an option (:func:`basics.errors.opt`): the parameter name, unless the command
line says how its user typed it (:func:`set_option_names`)."""


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def set_option_names(name: Callable[[str], str]) -> None:
    """Name options in status lines as ``name`` does (the CLI: as flags of the running command)."""
    global _option_name
    _option_name = name


def say_error(prefix: str, error: LyreError) -> None:
    """:func:`say` a problem lyre works around (``prefix: message``), its options named as the user
    gives them: a notice is read like an error, so it must offer the flag, not the parameter."""
    say(f"{prefix}: {error.render(_option_name)}")


def is_quiet() -> bool:
    """Whether ``--quiet`` is on (for code that must silence a library's own bars and log lines)."""
    return _quiet


def bar(total: float | None, desc: str, unit: str = "doc", **kwargs: Any) -> Any:
    """A tqdm bar on stderr (disabled when quiet). ``unit`` names what is counted: doc, token, query, pair."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        disable=_quiet,
        file=sys.stderr,
        **kwargs,
    )


def say(message: str) -> None:
    """One status line on stderr, unless quiet (routed through tqdm so it does not break a bar)."""
    if _quiet:
        return
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


class ProgressSink(Protocol):
    """Where token-measured work reports: ``items`` are documents or pairs, ``tokens`` their token count."""

    def tokenized(self, items: int, tokens: int) -> None:
        """``items`` inputs were tokenized into ``tokens`` tokens (known work, not done yet)."""

    def advance(self, items: int, tokens: int) -> None:
        """``items`` inputs of ``tokens`` tokens are done."""


class Counts:
    """A sink that only counts: what a worker reports back when it cannot draw a bar itself."""

    def __init__(self) -> None:
        self.tokenized_items = self.tokenized_tokens = self.done_items = self.done_tokens = 0

    def tokenized(self, items: int, tokens: int) -> None:
        self.tokenized_items += items
        self.tokenized_tokens += tokens

    def advance(self, items: int, tokens: int) -> None:
        self.done_items += items
        self.done_tokens += tokens


class BarSink:
    """A sink that advances a bar the caller already holds, by items (for callers that draw one bar over
    several calls, some of them served from disk)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def tokenized(self, items: int, tokens: int) -> None:
        """Known work does not move a plain bar."""

    def advance(self, items: int, tokens: int) -> None:
        self.bar.update(items)


class TokenProgress:
    """A bar counting items with a token-based ETA: inputs are length-sorted, so items per second swing
    wildly while tokens per second stay steady. Tokens not yet tokenized are estimated from the mean
    length seen so far. Use as a context manager (or call :meth:`close`)."""

    def __init__(self, total_items: int, desc: str, unit: str = "doc") -> None:
        self.total_items = total_items
        self.known_items = self.known_tokens = self.done_items = self.done_tokens = 0
        self.started = time.perf_counter()
        self.bar = bar(
            total_items,
            desc,
            unit=unit,
            bar_format="{desc}: {n_fmt}/{total_fmt} " + unit + "s {bar} [{elapsed}{postfix}]",
        )

    def tokenized(self, items: int, tokens: int) -> None:
        self.known_items += items
        self.known_tokens += tokens

    def advance(self, items: int, tokens: int) -> None:
        self.done_items += items
        self.done_tokens += tokens
        done, speed = count(self.done_tokens, "tokens"), rate(self.tokens_per_second, "tokens")
        self.bar.set_postfix_str(f"{done}, {speed}, ETA {self.eta()}", refresh=False)
        self.bar.update(items)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def tokens_per_second(self) -> float:
        return self.done_tokens / max(self.seconds, 1e-9)

    def remaining_tokens(self) -> float:
        """Tokens known but not done, plus the not yet tokenized items at the mean length so far."""
        mean = self.known_tokens / max(self.known_items, 1)
        return self.known_tokens - self.done_tokens + (self.total_items - self.known_items) * mean

    def eta(self) -> str:
        rate = self.tokens_per_second
        return time.strftime("%H:%M:%S", time.gmtime(self.remaining_tokens() / rate)) if rate > 0 else "?"

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> TokenProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
