"""search_commands"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    FUSION_HELP,
    IndexOption,
    OutRun,
    QrelsOption,
    QueriesOption,
    Quiet,
    RerankModel,
    TopicField,
    unescape,
)


def search(
    index: IndexOption,
    queries: QueriesOption,
    out: OutRun,
    qrels: QrelsOption = None,
    mode: Annotated[str, typer.Option(help="bm25, dense or hybrid.")] = "hybrid",
    k: Annotated[int, typer.Option(help="Documents per query in the run.")] = 1000,
    depth: Annotated[int, typer.Option(help="First-stage depth of each side before fusion.")] = 1000,
    fusion: Annotated[str, typer.Option(help=FUSION_HELP)] = "rrf",
    rrf_k: Annotated[int, typer.Option(help="RRF constant k.")] = 60,
    normalization: Annotated[str, typer.Option(help="linear fusion: min_max, zscore or none.")] = "min_max",
    weight: Annotated[
        float, typer.Option(help="linear fusion: weight of the dense side (BM25 gets 1-w).")
    ] = 0.5,
    rerank_model: RerankModel = "vec-ai/lychee-rerank",
    rerank_depth: Annotated[
        int, typer.Option(help="Rerank the top K of the fused list; 0 turns it off.")
    ] = 100,
    rerank_template: Annotated[
        str, typer.Option(help="lychee, qwen3-reranker, or a custom template.")
    ] = "lychee",
    instruction: Annotated[
        str | None, typer.Option(help="Task instruction for queries and reranker.")
    ] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists probed (default: tuned at build).")] = None,
    refine: Annotated[int | None, typer.Option(help="Re-score the top R candidates exactly.")] = None,
    topic_field: TopicField = "title",
    remove_query_id: Annotated[bool, typer.Option(help="Drop hits whose docid equals the qid.")] = False,
    tag: Annotated[str | None, typer.Option(help="Run tag (default: made from the settings).")] = None,
    quiet: Quiet = False,
) -> None:
    """Search a query file in batch and write a TREC run (hybrid BM25 + dense, fused, then reranked)."""
    from retrieval.pipeline import SearchSettings, search_to_run

    settings = SearchSettings(
        mode=mode,
        k=k,
        depth=depth,
        fusion=fusion,
        rrf_k=rrf_k,
        normalization=normalization,
        dense_weight=weight,
        rerank_model=rerank_model if rerank_depth > 0 else None,
        rerank_depth=rerank_depth,
        rerank_template=unescape(rerank_template),
        instruction=instruction,
        nprobe=nprobe,
        refine=refine,
        remove_query_id=remove_query_id,
        tag=tag,
    )
    typer.echo(search_to_run(index, queries, out, settings, qrels=qrels, topic_field=topic_field))


def rerank(
    index: IndexOption,
    queries: QueriesOption,
    run: Annotated[Path, typer.Option("--run", exists=True, help="The run to rerank.")],
    out: OutRun,
    rerank_model: RerankModel = "vec-ai/lychee-rerank",
    rerank_depth: Annotated[int, typer.Option(help="Rerank the top K of each query.")] = 100,
    rerank_template: Annotated[
        str, typer.Option(help="lychee, qwen3-reranker, or a custom template.")
    ] = "lychee",
    instruction: Annotated[str | None, typer.Option(help="Task instruction for the reranker.")] = None,
    topic_field: TopicField = "title",
    tag: Annotated[str | None, typer.Option(help="Run tag.")] = None,
    quiet: Quiet = False,
) -> None:
    """Rerank the top K of any existing run with the index's document texts."""
    from retrieval.pipeline import rerank_run_file

    typer.echo(
        rerank_run_file(
            index,
            queries,
            run,
            out,
            model=rerank_model,
            depth=rerank_depth,
            template=unescape(rerank_template),
            instruction=instruction,
            topic_field=topic_field,
            tag=tag,
        )
    )


def fuse(
    runs: Annotated[list[Path], typer.Argument(exists=True, help="Two or more run files.")],
    out: OutRun,
    fusion: Annotated[str, typer.Option(help=FUSION_HELP)] = "rrf",
    rrf_k: Annotated[int, typer.Option(help="RRF constant k.")] = 60,
    normalization: Annotated[str, typer.Option(help="linear fusion: min_max, zscore or none.")] = "min_max",
    weights: Annotated[str | None, typer.Option(help="linear fusion: comma-separated weights.")] = None,
    k: Annotated[int, typer.Option(help="Documents per query kept.")] = 1000,
    tag: Annotated[str | None, typer.Option(help="Run tag.")] = None,
    quiet: Quiet = False,
) -> None:
    """Fuse existing run files (RRF or normalised linear combination) into one run."""
    from retrieval.pipeline import fuse_run_files

    parsed = [float(value) for value in weights.split(",")] if weights else None
    typer.echo(
        fuse_run_files(
            runs, out, fusion=fusion, rrf_k=rrf_k, normalization=normalization, weights=parsed, k=k, tag=tag
        )
    )
