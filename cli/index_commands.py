"""index_commands"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import (
    Dim,
    Dtype,
    EmbedModel,
    ExistingPath,
    IdField,
    IndexOption,
    MaxLength,
    NumShards,
    OnError,
    OutIndex,
    Pooling,
    QueryInstruction,
    QueryTemplate,
    Quiet,
    ShardId,
    TextField,
    TitleField,
    unescape,
)


def ingest(
    corpus: ExistingPath,
    out: OutIndex,
    id_field: IdField = None,
    title_field: TitleField = None,
    text_field: TextField = None,
    on_error: OnError = "fail",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing docstore.")] = False,
    quiet: Quiet = False,
) -> None:
    """Stream a corpus (JSONL[.gz], TSV[.gz], Parquet, BEIR folder) into the index's Parquet docstore."""
    from indexes.ingest import ingest as run_ingest

    report = run_ingest(
        corpus,
        out,
        id_field=id_field,
        title_field=title_field,
        text_field=text_field,
        on_error=on_error,
        overwrite=overwrite,
    )
    typer.echo(report.summary())


def index(
    corpus: ExistingPath,
    out: OutIndex,
    bm25_only: Annotated[bool, typer.Option(help="Build the docstore and BM25 only.")] = False,
    embed_model: EmbedModel = "vec-ai/lychee-embed",
    index_type: Annotated[str, typer.Option(help="auto, flat (exact) or ivfpq.")] = "auto",
    id_field: IdField = None,
    title_field: TitleField = None,
    text_field: TextField = None,
    on_error: OnError = "fail",
    analyzer: Annotated[
        str, typer.Option(help="BM25 analyzer: english, english-snowball, cjk-bigram, plain.")
    ] = "english",
    stemmer: Annotated[
        str | None, typer.Option(help="Override: porter, a Snowball language, or none.")
    ] = None,
    stopwords: Annotated[
        str | None, typer.Option(help="Override: lucene, none, or comma-separated words.")
    ] = None,
    bm25_method: Annotated[str, typer.Option(help="lucene, robertson, atire, bm25l or bm25+.")] = "lucene",
    k1: Annotated[float, typer.Option(help="BM25 k1.")] = 0.9,
    b: Annotated[float, typer.Option(help="BM25 b.")] = 0.4,
    max_length: MaxLength = None,
    dim: Dim = None,
    shard_id: ShardId = None,
    num_shards: NumShards = None,
    pooling: Pooling = None,
    query_template: QueryTemplate = None,
    query_instruction: QueryInstruction = None,
    dtype: Dtype = None,
    shard_rows: Annotated[int | None, typer.Option(help="Documents per Faiss shard file.")] = None,
    nlist: Annotated[int | None, typer.Option(help="IVF lists (default: from N).")] = None,
    pq_m: Annotated[
        int | None, typer.Option(help="PQ bytes per vector (default: from the dimension).")
    ] = None,
    recall_target: Annotated[float, typer.Option(help="Overlap@100 with exact search to tune for.")] = 0.95,
    nprobe: Annotated[int | None, typer.Option(help="Fix nprobe instead of tuning it.")] = None,
    refine: Annotated[
        int | None, typer.Option(help="Fix the exact re-scoring depth instead of tuning it.")
    ] = None,
    engine: Annotated[str, typer.Option(help="local, or ray to encode on a Ray cluster.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local Ray).")
    ] = None,
    ray_cpu_actors: Annotated[int | None, typer.Option(help="Ray actors on a cluster without GPUs.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild every stage from scratch.")] = False,
    quiet: Quiet = False,
) -> None:
    """Build or resume an index (docstore, BM25, embeddings, Faiss shards); reruns redo what is missing."""
    from indexes.build import IndexPlan, build_index

    plan = IndexPlan(
        bm25_only=bm25_only,
        embed_model=embed_model,
        index_type=index_type,
        id_field=id_field,
        title_field=title_field,
        text_field=text_field,
        on_error=on_error,
        analyzer=analyzer,
        stemmer=stemmer,
        stopwords=stopwords,
        bm25_method=bm25_method,
        k1=k1,
        b=b,
        max_length=max_length,
        dim=dim,
        shard_id=shard_id,
        num_shards=num_shards,
        engine=engine,
        ray_address=ray_address,
        ray_cpu_actors=ray_cpu_actors,
        shard_rows=shard_rows,
        nlist=nlist,
        pq_m=pq_m,
        recall_target=recall_target,
        nprobe=nprobe,
        refine=refine,
        pooling=pooling,
        query_template=unescape(query_template),
        query_instruction=query_instruction,
        dtype=dtype,
        overwrite=overwrite,
    )
    typer.echo(build_index(corpus, out, plan))


def encode(
    index: IndexOption,
    embed_model: EmbedModel = "vec-ai/lychee-embed",
    max_length: MaxLength = None,
    dim: Dim = None,
    pooling: Pooling = None,
    query_template: QueryTemplate = None,
    query_instruction: QueryInstruction = None,
    dtype: Dtype = None,
    shard_id: ShardId = None,
    num_shards: NumShards = None,
    chunk_rows: Annotated[
        int, typer.Option(help="Documents per embedding chunk (the unit of resume).")
    ] = 8192,
    token_budget: Annotated[int | None, typer.Option(help="Padded tokens per batch.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Discard existing embeddings.")] = False,
    quiet: Quiet = False,
) -> None:
    """Encode the docstore of an index into embedding chunks (resumable; one slice with --shard-id)."""
    from indexes.encode import encode_stage

    report = encode_stage(
        index,
        model=embed_model,
        max_length=max_length,
        dim=dim,
        pooling=pooling,
        query_template=unescape(query_template),
        query_instruction=query_instruction,
        dtype=dtype,
        shard_id=shard_id,
        num_shards=num_shards,
        chunk_rows=chunk_rows,
        token_budget=token_budget,
        overwrite=overwrite,
    )
    typer.echo(report["summary"])
