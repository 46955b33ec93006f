"""Builders shared by the ``lyre serve`` tests: a real server (uvicorn over the real app and service,
started the way ``lyre serve`` starts it) in a thread of the test process on a free port, a plain HTTP
client, and the lines of a run file as ``lyre search`` wrote them."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import wait_for
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.serve.options import RunViewOptions, ServerOptions
from lyre.serve.server import ServeSettings


def serve_settings(
    mode: str = "hybrid",
    *,
    rerank: RerankOptions | None = None,
    server: ServerOptions | None = None,
    runs: RunViewOptions | None = None,
    cache: bool = False,
) -> ServeSettings:
    """Settings of a test server: ``mode``, no reranking unless given, no cache unless asked, port 0."""
    return ServeSettings(
        SearchOptions(mode=mode),
        rerank or RerankOptions(rerank_depth=0),
        CacheOptions(no_cache=not cache),
        AggregationOptions(),
        server or ServerOptions(port=0),
        runs or RunViewOptions(),
    )


@dataclass(frozen=True)
class Served:
    """A running server: its address and its service (whose batcher the tests inspect)."""

    url: str
    service: Any

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``: the status and the parsed JSON body (errors included)."""
        return http(self.url + path)

    def post(self, path: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
        """POST ``body`` as JSON (or ``raw`` bytes) to ``path``: the status and the parsed JSON body."""
        data = raw if raw is not None else json.dumps(body).encode()
        return http(self.url + path, data=data)


def http(url: str, data: bytes | None = None) -> tuple[int, Any]:
    """One request with the standard library; the status and the JSON body of any answer."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def http_text(url: str) -> tuple[int, str, str]:
    """GET ``url``: status, content type and body as text (the page and its static files)."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.headers.get("content-type", ""), response.read().decode()


@contextlib.contextmanager
def serving(index: Path, settings: ServeSettings, **started_options: Any) -> Iterator[Served]:
    """``lyre serve`` in this process: :func:`serve.server.started`, then uvicorn in a thread."""
    from lyre.serve.app import create_app
    from lyre.serve.server import address_of, http_server, started

    with started(index, settings, **started_options) as (service, sock):
        web = http_server(create_app(service), quiet=True)
        thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            wait_for(lambda: web.started, "the server to start", seconds=60)
            yield Served(address_of(sock), service)
        finally:
            web.should_exit = True
            thread.join(60)


def run_lines(path: Path) -> dict[str, list[tuple[int, str, str]]]:
    """Per query, the (rank, docid, score text) of each line of a run file, in file order."""
    lines: dict[str, list[tuple[int, str, str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, _, docid, rank, score, _ = line.split()
        lines.setdefault(qid, []).append((int(rank), docid, score))
    return lines


def hit_lines(hits: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """The (rank, docid, score text) of served hits, the score written as a run file writes it."""
    from lyre.formats.runs import format_score

    return [(hit["rank"], hit["docid"], format_score(hit["score"])) for hit in hits]


def sample_queries(sample: Path) -> dict[str, str]:
    """The sample's queries, id -> text."""
    from lyre.formats.queries import read_queries

    return {query.qid: query.text for query in read_queries(sample / "queries.tsv")}
