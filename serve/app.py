"""The HTTP face of the server: a FastAPI app over :class:`serve.service.Service`.

Every answer is JSON except the page and its static files. Errors are one JSON line ``{"error": ...}``:
a bad parameter is 400 (a lyre check) or 422 (a value of the wrong type), an unknown document, query
or run 404, a body over the limit 413, and anything unexpected 500 with the traceback in the server's
log only. No endpoint takes a path: the index, runs, qrels and queries were fixed at start. The schema
is at ``/openapi.json``; FastAPI's own docs pages are off, since they load scripts from a CDN.
"""

from __future__ import annotations

from importlib import metadata, resources
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from lyre.basics.errors import LyreError
from lyre.basics.numbers import size
from lyre.serve.searcher import RequestSettings
from lyre.serve.service import AskedQuery, NotFound, Service
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = resources.files("lyre.serve") / "static"


class Hit(BaseModel):
    """One document of a ranking: the line ``lyre search`` writes for it, and what the page shows."""

    rank: int
    docid: str
    score: float = Field(description="The score written in the run file (the same double).")
    title: str | None
    snippet: str | None = Field(description="The passage richest in the query's terms.")
    highlights: list[list[int]] = Field(description="[start, end) character spans of query terms in snippet.")
    bm25_rank: int | None = Field(description="Rank in the BM25 list the fusion read (None: not in it).")
    dense_rank: int | None = Field(description="Rank in the dense list the fusion read (None: not in it).")


class Settings(BaseModel):
    k: int
    mode: str
    rerank_depth: int
    tag: str = Field(description="The run tag lyre search writes with these settings.")


class SearchAnswer(BaseModel):
    query: str
    qid: str | None
    settings: Settings
    hits: list[Hit]


class Result(BaseModel):
    query: str
    qid: str | None
    hits: list[Hit]


class BatchAnswer(BaseModel):
    settings: Settings
    results: list[Result]


class AskedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    qid: str | None = Field(
        None, description="Its id: with remove_query_id, the document of that id is dropped."
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[AskedItem | str]
    k: int | None = None
    mode: str | None = None
    rerank_depth: int | None = None


class DocumentAnswer(BaseModel):
    docid: str
    title: str
    text: str
    title_highlights: list[list[int]]
    highlights: list[list[int]]


class Problem(BaseModel):
    error: str


class BodyTooLarge(Exception):
    """A request body past the server's limit."""


class LimitBody:
    """ASGI middleware: refuse a body over ``limit`` bytes, by its declared length or as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body over {size(limit)}; send fewer queries"}, status_code=413)


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.splitlines())}, status_code=status)


def _validation_line(error: RequestValidationError) -> str:
    """The first problem FastAPI found, as ``where: what`` (the parameter, not its location kind)."""
    first = error.errors()[0]
    location = list(first.get("loc", ()))
    if location and location[0] in ("query", "body", "path"):
        location = location[1:]
    where = ".".join(map(str, location))
    return f"{where or 'request'}: {first.get('msg', 'invalid')}"


def _install_errors(app: FastAPI, limit: int) -> None:
    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> JSONResponse:
        return _problem(404, str(error))

    @app.exception_handler(LyreError)
    async def refused(request: Request, error: LyreError) -> JSONResponse:
        return _problem(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _problem(422, _validation_line(error))

    @app.exception_handler(HTTPException)
    async def http(request: Request, error: HTTPException) -> JSONResponse:
        return _problem(error.status_code, str(error.detail))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return _too_large(limit)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette raises the error again once this answer is sent: the server logs its traceback.
        return _problem(500, "internal error; the server's log has the details")


def _version() -> str:
    try:
        return metadata.version("lychee-retrieval")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(service: Service) -> FastAPI:
    """The app answering through ``service`` (started by the caller, for as long as the app serves)."""
    app = FastAPI(
        title="lyre serve",
        version=_version(),
        description='Search an index with warm models; compare runs. Every error is {"error": "..."}.',
        docs_url=None,
        redoc_url=None,
        responses={400: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}},
    )
    limit = service.limits.max_request_kb * 1024
    app.add_middleware(LimitBody, limit=limit)
    _install_errors(app, limit)

    async def described(settings: RequestSettings) -> dict[str, Any]:
        return {**vars(settings), "tag": await service.tag(settings)}

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """The index, the request settings this server answers (modes, k, rerank depth) and its runs."""
        return service.health()

    @app.get("/api/search", response_model=SearchAnswer)
    async def search_one(
        q: Annotated[str, Query(description="The query text.")],
        k: Annotated[int | None, Query(description="Hits to return (default: the server's).")] = None,
        mode: Annotated[
            str | None, Query(description="bm25, dense or hybrid (default: the server's).")
        ] = None,
        rerank_depth: Annotated[int | None, Query(description="Rerank the top N; 0: none.")] = None,
        qid: Annotated[str | None, Query(description="The query's id (see remove_query_id).")] = None,
    ) -> JSONResponse:
        """One query: the hits ``lyre search`` writes for it with these settings, with titles, snippets
        and the BM25 and dense ranks the fusion read."""
        settings = service.settings(k, mode, rerank_depth)
        (found,) = await service.search(settings, [AskedQuery(q, qid)])
        return JSONResponse({**found, "settings": await described(settings)})

    @app.post("/api/search", response_model=BatchAnswer)
    async def search_many(request: Annotated[BatchRequest, Body()]) -> JSONResponse:
        """Several queries with one set of settings (each query a text or ``{"text", "qid"}``)."""
        asked = [
            AskedQuery(item) if isinstance(item, str) else AskedQuery(item.text, item.qid)
            for item in request.queries
        ]
        settings = service.settings(request.k, request.mode, request.rerank_depth)
        results = await service.search(settings, asked)
        return JSONResponse({"settings": await described(settings), "results": results})

    @app.get("/api/doc/{docid:path}", response_model=DocumentAnswer)
    async def document(
        docid: Annotated[str, Path(description="The document's id.")],
        q: Annotated[str | None, Query(description="A query whose terms are marked.")] = None,
    ) -> JSONResponse:
        """A document's title and text (404 for an id the index does not hold)."""
        return JSONResponse(await service.document(docid, q))

    @app.get("/api/runs")
    async def runs() -> dict[str, Any]:
        """The runs given at start, the measures, and each judged query's value per run (the numbers of
        ``lyre eval --per-query``)."""
        return service.runs()

    @app.get("/api/compare")
    async def compare(
        qid: Annotated[str, Query(description="A judged query.")],
        a: Annotated[str, Query(description="A run, named as given at start.")],
        b: Annotated[str, Query(description="Another run, named as given at start.")],
    ) -> dict[str, Any]:
        """Two runs' rankings of one query side by side, with grades and each document's other rank."""
        return await service.compare(qid, a, b)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
