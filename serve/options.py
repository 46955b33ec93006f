"""The settings of ``lyre serve`` beyond those of ``lyre search``, each declared once.

``lyre serve`` takes every search option of ``lyre search`` (:mod:`retrieval.options`), which fix what the
server loads and what a request gets by default. The groups here say where it listens, how much one
request may ask, how concurrent requests are batched, and which runs the comparison page shows. The
runs, qrels and queries are fixed at start: no request names a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from lyre.basics.declared import check_options, option
from lyre.basics.errors import OptionError, opt
from lyre.basics.outputs import Reads
from lyre.retrieval.evaluation import DEFAULT_MEASURES


@dataclass(frozen=True)
class ServerOptions:
    """Where the server listens, what one request may ask, and how requests are batched."""

    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0 makes the server reachable by others).")
    port: int = option(
        8080, "Port to listen on; 0 picks a free one (printed when ready).", minimum=0, maximum=65535
    )
    hits: int = option(10, "Hits a request gets when it gives no k (at most the k setting).", minimum=1)
    max_queries: int = option(100, "Most queries one batch request (POST /api/search) may hold.", minimum=1)
    max_query_chars: int = option(2000, "Longest query text a request may hold, in characters.", minimum=1)
    max_request_kb: int = option(1024, "Largest request body, in KiB.", minimum=1)
    batch_window_ms: float = option(
        2.0,
        "How long the first query of a batch waits for others before the models run (milliseconds).",
        minimum=0,
        maximum=1000,
    )
    batch_size: int = option(32, "Most queries the models see in one batch.", minimum=1)


@dataclass(frozen=True)
class RunViewOptions:
    """The runs the comparison page shows, and what it measures them with (all read once, at start)."""

    # option() makes a dataclass field (its default None is not shared state): RUF009 does not apply.
    runs: Annotated[list[Path] | None, Reads("run")] = option(  # noqa: RUF009
        None, "A run file the page compares (repeat: --runs A.run --runs B.run)."
    )
    qrels: Annotated[Path | None, Reads("qrels")] = option(  # noqa: RUF009
        None, "Judgements of the runs' queries (needed with runs)."
    )
    queries: Annotated[Path | None, Reads("queries file")] = option(  # noqa: RUF009
        None, "Texts of the runs' queries, shown beside their ids."
    )
    measures: str = option(",".join(DEFAULT_MEASURES), "Comma-separated ir-measures names, per query.")
    compare_depth: int = option(50, "Documents of each run shown per query on the page.", minimum=1)


def check_server_options(server: ServerOptions, runs: RunViewOptions) -> None:
    """Declared ranges and choices of both groups, then what they need of each other."""
    check_options(server)
    check_options(runs)
    if runs.runs and runs.qrels is None:
        raise OptionError("runs", ", ".join(map(str, runs.runs)), f"need {opt('qrels')} to be compared")
    if runs.queries is not None and not runs.runs:
        raise OptionError("queries", runs.queries, f"name the texts of {opt('runs')}; give the runs too")
    if runs.qrels is not None and not runs.runs:
        raise OptionError("qrels", runs.qrels, f"judge {opt('runs')}; give the runs too")
