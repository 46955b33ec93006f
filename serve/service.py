"""What the HTTP layer calls: request settings checked, queries handed to the batching thread, answers
awaited; runs of the comparison page looked up. No framework here, so the tests can drive it directly.

A query's id inside a batch is the one the request gave (``remove_query_id`` then drops that document,
as ``lyre search`` does) or ``request N``, which holds a space and so can never equal a document id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.numbers import count
from lyre.formats.records import Query
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.serve.batching import MicroBatcher
from lyre.serve.options import ServerOptions
from lyre.serve.runview import RunView
from lyre.serve.searcher import Capabilities, RequestSettings, Searcher


class NotFound(LyreError):
    """A document, query or run the request names does not exist here (HTTP 404)."""


class BadRequest(LyreError):
    """A request's parameter refused (HTTP 400), named as the request spells it (``q``, ``qid``,
    ``queries``): these are not options of any command."""

    def __init__(self, parameter: str, value: Any, problem: str) -> None:
        super().__init__(f"{parameter} {value}: {problem}")


@dataclass(frozen=True)
class AskedQuery:
    """One query of a request: its text and, optionally, its id."""

    text: str
    qid: str | None = None


class Service:
    """The warm server: the batching thread with the searcher, the limits, the runs to compare."""

    def __init__(
        self,
        batcher: MicroBatcher,
        capabilities: Capabilities,
        tags: dict[RequestSettings, str],
        limits: ServerOptions,
        run_view: RunView | None,
        index_dir: Path,
    ) -> None:
        self.batcher = batcher
        self.capabilities = capabilities
        self.limits = limits
        self.run_view = run_view
        self.index_dir = index_dir
        self._tags = tags
        self._serial = itertools.count(1)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        index_dir: Path,
        opened: Any,
        options: SearchOptions,
        rerank_options: RerankOptions,
        cache: CacheOptions | None,
        aggregation: AggregationOptions,
        limits: ServerOptions,
        run_view: RunView | None = None,
    ) -> Iterator[Service]:
        """The searcher opened in its batching thread (every model loaded) for the block; ``opened``:
        the index as :func:`indexes.open_index.open_for_search` holds it, for as long as the block runs."""
        batcher = MicroBatcher(
            lambda: Searcher.open(
                index_dir, opened, options, rerank_options, cache, aggregation, limits.hits
            ),
            limits.batch_window_ms / 1000,
            limits.batch_size,
        )
        batcher.start()
        try:
            capabilities, tag = batcher.call(_capabilities_and_tag).result()
            yield cls(batcher, capabilities, {capabilities.defaults: tag}, limits, run_view, index_dir)
        finally:
            batcher.stop()

    def settings(self, k: int | None, mode: str | None, rerank_depth: int | None) -> RequestSettings:
        """A request's settings, each unset one at the server's default; refused beyond what is loaded."""
        defaults = self.capabilities.defaults
        settings = RequestSettings(
            k if k is not None else defaults.k,
            mode if mode is not None else defaults.mode,
            rerank_depth if rerank_depth is not None else defaults.rerank_depth,
        )
        self.capabilities.check(settings)
        return settings

    def check_queries(self, queries: Sequence[AskedQuery]) -> None:
        """Refuse an empty or too large request, and empty or too long query texts."""
        if not queries:
            raise BadRequest("queries", 0, "give at least one query")
        if len(queries) > self.limits.max_queries:
            raise BadRequest(
                "queries", len(queries), f"must be at most {count(self.limits.max_queries)} per request"
            )
        for query in queries:
            if not query.text.strip():
                raise BadRequest("q", repr(query.text), "is empty; give the words to search for")
            if len(query.text) > self.limits.max_query_chars:
                raise BadRequest(
                    "q",
                    f"of {count(len(query.text), 'characters')}",
                    f"is longer than {count(self.limits.max_query_chars)}",
                )
            if query.qid is not None and (not query.qid or query.qid != query.qid.strip()):
                raise BadRequest("qid", repr(query.qid), "must be non-empty, without surrounding spaces")

    async def search(self, settings: RequestSettings, queries: Sequence[AskedQuery]) -> list[dict[str, Any]]:
        """Each query's hits with ``settings``, searched with whatever other requests are waiting."""
        self.check_queries(queries)
        futures = []
        for asked in queries:
            qid = asked.qid if asked.qid is not None else f"request {next(self._serial)}"
            futures.append(asyncio.wrap_future(self.batcher.submit(settings, qid, Query(qid, asked.text))))
        hits = await asyncio.gather(*futures)
        return [
            {"query": asked.text, "qid": asked.qid, "hits": found}
            for asked, found in zip(queries, hits, strict=True)
        ]

    async def tag(self, settings: RequestSettings) -> str:
        """The tag ``lyre search`` writes for these settings (made once per settings)."""
        if settings not in self._tags:
            self._tags[settings] = await asyncio.wrap_future(
                self.batcher.call(lambda worker: worker.tag(settings))
            )
        return self._tags[settings]

    async def document(self, docid: str, query: str | None) -> dict[str, Any]:
        """A document's title and text, ``query``'s terms marked; :class:`NotFound` for an unknown id."""
        if query is not None and len(query) > self.limits.max_query_chars:
            raise BadRequest(
                "q",
                f"of {count(len(query), 'characters')}",
                f"is longer than {count(self.limits.max_query_chars)}",
            )
        found = await asyncio.wrap_future(self.batcher.call(lambda worker: worker.document(docid, query)))
        if found is None:
            raise NotFound(f"document {docid!r} is not in the index")
        return found

    def runs(self) -> dict[str, Any]:
        """The comparison page's runs, measures and per-query values."""
        return self._run_view().summary()

    async def compare(self, qid: str, first: str, second: str) -> dict[str, Any]:
        """Two runs' rankings of query ``qid`` side by side (:meth:`RunView.comparison`)."""
        view = self._run_view()
        for name in (first, second):
            if name not in view.runs:
                raise NotFound(
                    f"run {name!r} is not one of the runs this server compares ({', '.join(view.runs)})"
                )
        if qid not in view.qrels:
            raise NotFound(f"query {qid!r} is not judged in {view.table.qrels}")
        return await asyncio.wrap_future(
            self.batcher.call(lambda worker: view.comparison(qid, first, second, worker.documents))
        )

    def _run_view(self) -> RunView:
        if self.run_view is None:
            raise NotFound("this server compares no runs; start it with runs and qrels to compare them")
        return self.run_view

    def health(self) -> dict[str, Any]:
        """What the server holds: the index, the request settings it answers, the runs it compares."""
        return {
            "status": "ok",
            "index": str(self.index_dir),
            **self.capabilities.to_dict(),
            "limits": {
                "max_queries": self.limits.max_queries,
                "max_query_chars": self.limits.max_query_chars,
                "max_request_kb": self.limits.max_request_kb,
            },
            "runs": list(self.run_view.runs) if self.run_view is not None else [],
        }


def _capabilities_and_tag(searcher: Searcher) -> tuple[Capabilities, str]:
    """What the opened searcher can answer, and the tag of its default settings."""
    return searcher.capabilities, searcher.tag(searcher.capabilities.defaults)
