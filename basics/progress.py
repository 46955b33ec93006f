"""Progress bars and status lines, silenced in one place by the CLI's global ``--quiet``.

Library functions call :func:`bar` and :func:`say` instead of threading a ``quiet`` flag through every
call (a weak spot peers have). Everything goes to stderr so stdout stays clean for tables and JSON.
"""

from __future__ import annotations

import sys
from typing import Any

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


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
