"""``lyre serve``: the search options of ``lyre search`` (declared once, in :mod:`retrieval.options`) and
the server's own (:mod:`serve.options`) as flags, one library call that serves until interrupted."""

from __future__ import annotations

from dataclasses import replace

import typer
from lyre.cli.common import IndexOption, Quiet, unescape
from lyre.cli.flags import flags_from_options
from lyre.cli.search_commands import SettingsOption, typed_on_command_line
from lyre.indexes.stages import WriterOptions
from lyre.retrieval.aggregation import AggregationOptions
from lyre.retrieval.cache import CacheOptions
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.settings_file import apply, read_settings
from lyre.serve.options import RunViewOptions, ServerOptions
from lyre.serve.server import ServeSettings
from lyre.serve.server import serve as run_server


@flags_from_options
def serve(
    context: typer.Context,
    index: IndexOption,
    options: SearchOptions,
    rerank: RerankOptions,
    cache: CacheOptions,
    aggregation: AggregationOptions,
    lock: WriterOptions,
    server: ServerOptions,
    runs: RunViewOptions,
    settings: SettingsOption = None,
    quiet: Quiet = False,
) -> None:
    """Serve an index with warm models: a JSON API (/api/search, /openapi.json) and a page to search it
    and compare runs (http://127.0.0.1:8080 by default). The search flags set each request's defaults."""
    typed = typed_on_command_line(context)
    if settings is not None:
        chosen = read_settings(settings)
        options, rerank = apply(chosen, options, rerank, keep=typed)
        typed |= set(chosen)
    rerank = replace(rerank, rerank_template=unescape(rerank.rerank_template))
    chosen_settings = ServeSettings(options, rerank, cache, aggregation, server, runs)
    run_server(index, chosen_settings, wait=lock.wait, reranker_optional="rerank_depth" not in typed)
