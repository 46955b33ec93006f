"""``lyre serve``: check everything, read the runs, hold the index, load the models, then listen.

The order makes mistakes cheap, as in ``lyre search``: options first, then the runs and qrels (read and
evaluated in a second), then the port (a taken port is said before minutes of model loading), then the
index under its read lock and the models. The lock is held until the server stops, so no ``lyre index``
replaces a file under it. Progress goes to stderr (silenced by ``--quiet``); once ready, one line on
stdout gives the address, and requests run silently.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from lyre.basics import progress
from lyre.basics.declared import check_options
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.indexes.manifest import PASSAGES
from lyre.indexes.open_index import open_for_search
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import check_plan_options, locate_reranker, needed_stages
from lyre.serve.options import RunViewOptions, ServerOptions, check_server_options
from lyre.serve.runview import RunView
from lyre.serve.service import Service


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` and listening (port 0: a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as error:
        raise OptionError("host", host, f"cannot be listened on ({error})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as error:
        sock.close()
        raise OptionError(
            "port",
            port,
            f"cannot be listened on at {host} ({error.strerror}); pick another, or 0 for any free one",
        ) from None
    return sock


def address_of(sock: socket.socket) -> str:
    """The URL a browser opens for ``sock``."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def http_server(app: Any, quiet: bool) -> Any:
    """The uvicorn server of ``app``: errors (and, unless ``quiet``, warnings) logged, no access log."""
    import uvicorn

    config = uvicorn.Config(
        app, log_level="error" if quiet else "warning", access_log=False, timeout_graceful_shutdown=5
    )
    return uvicorn.Server(config)


def require_web_stack() -> None:
    """The web framework is an extra: without it, one line saying how to install it, before any work."""
    missing = [name for name in ("fastapi", "uvicorn") if find_spec(name) is None]
    if missing:
        needed = " and ".join(missing)
        raise LyreError(f"lyre serve needs {needed}; install them: `pip install 'lychee-retrieval[serve]'`")


def without_missing_reranker(rerank_options: RerankOptions) -> RerankOptions:
    """The reranker settings, with reranking off (said once) when the default reranker is not here: a
    server started without naming one still serves the first stage."""
    if rerank_options.rerank_depth == 0:
        return rerank_options
    try:
        locate_reranker(rerank_options, optional=False)
    except LyreError as error:
        progress.say_error("serving without reranking", error)
        return replace(rerank_options, rerank_depth=0)
    return rerank_options


@dataclass(frozen=True)
class ServeSettings:
    """Every settings group of ``lyre serve``: those of ``lyre search``, then the server's own."""

    options: SearchOptions
    rerank: RerankOptions
    cache: CacheOptions | None
    aggregation: AggregationOptions
    server: ServerOptions
    runs: RunViewOptions

    def check(self) -> None:
        """Everything that needs no file, before any work."""
        check_plan_options(self.options, self.rerank)
        if self.cache is not None:
            check_options(self.cache)
        self.aggregation.validate()
        check_server_options(self.server, self.runs)
        if self.server.hits > self.options.k:
            raise OptionError(
                "hits",
                self.server.hits,
                f"must be at most {opt('k')} {self.options.k}, the most a request may ask",
            )


@contextlib.contextmanager
def started(
    index_dir: Path, settings: ServeSettings, *, wait: bool = False, reranker_optional: bool = False
) -> Iterator[tuple[Service, socket.socket]]:
    """The service, warm, and its listening socket, for the block (the index held under its read lock
    throughout). ``reranker_optional``: the rerank depth was not asked for, so a missing reranker turns
    reranking off instead of stopping."""
    settings.check()
    require_web_stack()
    rerank = without_missing_reranker(settings.rerank) if reranker_optional else settings.rerank
    run_view = RunView.load(settings.runs)
    mode = settings.options.mode
    sock = listening_socket(settings.server.host, settings.server.port)
    holding = open_for_search(index_dir, needed_stages(mode), wait=wait, if_built=(PASSAGES,))
    with contextlib.closing(sock), holding as opened:
        progress.say(f"loading {index_dir} ({mode})")
        with Service.running(
            index_dir,
            opened,
            settings.options,
            rerank,
            settings.cache,
            settings.aggregation,
            settings.server,
            run_view,
        ) as service:
            yield service, sock


def serve(
    index_dir: Path, settings: ServeSettings, *, wait: bool = False, reranker_optional: bool = False
) -> None:
    """``lyre serve``: serve ``index_dir`` until interrupted (:func:`started`)."""
    from lyre.serve.app import create_app  # imports FastAPI: kept out of `lyre serve --help` and the checks

    with started(index_dir, settings, wait=wait, reranker_optional=reranker_optional) as (service, sock):
        web = http_server(create_app(service), quiet=progress.is_quiet())
        with stopped_by_signals(web):
            print(f"ready: {address_of(sock)}", flush=True)
            progress.set_quiet(True)  # requests do not draw rerank progress bars
            web.run(sockets=[sock])


@contextlib.contextmanager
def stopped_by_signals(web: Any) -> Iterator[None]:
    """Ctrl-C and SIGTERM: the normal end of a server, at any moment from the ready line on. uvicorn
    handles both while it serves, and raises them again once shut down; here either just asks the server
    to exit, so the block ends normally: the service closes its models and the index is released."""

    def stop(signum: int, frame: Any) -> None:
        web.should_exit = True

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
