"""The `lyre` command line. Each command parses its options, calls one library function and prints.

Heavy libraries (torch, transformers, faiss, bm25s, pyarrow) are imported inside the commands, so
`lyre --help` answers instantly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from retrieval import progress
from retrieval.errors import LyreError
from retrieval.fusion import FUSION_METHODS

FUSION_HELP = "; ".join(
    f"{method.name}: {method.summary} ({', '.join(f'{p.name}={p.default}' for p in method.params)})"
    for method in FUSION_METHODS.values()
)

app = typer.Typer(
    help="lyre: ingest a corpus, index it (BM25 + dense), search, rerank, fuse and evaluate TREC runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ExistingPath = Annotated[Path, typer.Argument(exists=True, help="An existing file or folder.")]
IndexOption = Annotated[Path, typer.Option("--index", exists=True, file_okay=False, help="An index folder.")]
OutIndex = Annotated[Path, typer.Option("--out", help="The index folder to create or complete.")]
OutRun = Annotated[Path, typer.Option("--out", help="The TREC run file to write (plus RUN.meta.json).")]
QueriesOption = Annotated[
    Path, typer.Option("--queries", exists=True, help="TSV, JSONL, TREC topics or Parquet.")
]
QrelsOption = Annotated[Path | None, typer.Option("--qrels", exists=True, help="Keep only judged queries.")]
TopicField = Annotated[str, typer.Option(help="TREC topics: title, desc or title+desc.")]
IdField = Annotated[str | None, typer.Option(help="Corpus field holding the document id (default: guessed).")]
TitleField = Annotated[str | None, typer.Option(help="Corpus field holding the title (default: guessed).")]
TextField = Annotated[str | None, typer.Option(help="Corpus field holding the text (default: guessed).")]
OnError = Annotated[
    str, typer.Option(help="fail: stop at the first bad document; skip: skip and count them.")
]
EmbedModel = Annotated[str, typer.Option(help="Hub id or local folder of the embedding model.")]
RerankModel = Annotated[str, typer.Option(help="Hub id or local folder of the reranker.")]
ShardId = Annotated[int | None, typer.Option(help="Encode only this slice (default: SLURM_ARRAY_TASK_ID).")]
MaxLength = Annotated[int | None, typer.Option(help="Token limit per document.")]
Dim = Annotated[int | None, typer.Option(help="Matryoshka: keep the first DIM dimensions.")]
Pooling = Annotated[str | None, typer.Option(help="Override the recipe: last-token, mean or cls.")]
QueryTemplate = Annotated[str | None, typer.Option(help="Override, e.g. 'Instruct: {task}\\nQuery:{query}'.")]
QueryInstruction = Annotated[str | None, typer.Option(help="Override the task instruction given to queries.")]
Dtype = Annotated[str | None, typer.Option(help="auto (bf16 on CUDA, float32 on CPU), float32 or bfloat16.")]
NumShards = Annotated[int | None, typer.Option(help="Number of slices (default: SLURM_ARRAY_TASK_COUNT).")]


def _unescape(template: str | None) -> str | None:
    """Templates typed in a shell carry a literal backslash-n; the models need the newline itself."""
    return template.replace("\\n", "\n") if template else template


def _silence(quiet: bool) -> bool:
    if quiet:
        progress.set_quiet(True)
    return quiet


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", callback=_silence, help="No progress bars or status lines.")
]
"""Accepted before the command (``lyre -q index``) and after it (``lyre index ... --quiet``)."""


@app.callback()
def _global(quiet: Quiet = False) -> None:
    """Only the global ``--quiet``; its callback does the work."""


@app.command()
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
    from retrieval.ingest import ingest as run_ingest

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


@app.command()
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
        query_template=_unescape(query_template),
        query_instruction=query_instruction,
        dtype=dtype,
        overwrite=overwrite,
    )
    typer.echo(build_index(corpus, out, plan))


@app.command()
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
        query_template=_unescape(query_template),
        query_instruction=query_instruction,
        dtype=dtype,
        shard_id=shard_id,
        num_shards=num_shards,
        chunk_rows=chunk_rows,
        token_budget=token_budget,
        overwrite=overwrite,
    )
    typer.echo(report["summary"])


@app.command()
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
        rerank_template=_unescape(rerank_template),
        instruction=instruction,
        nprobe=nprobe,
        refine=refine,
        remove_query_id=remove_query_id,
        tag=tag,
    )
    typer.echo(search_to_run(index, queries, out, settings, qrels=qrels, topic_field=topic_field))


@app.command()
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
            template=_unescape(rerank_template),
            instruction=instruction,
            topic_field=topic_field,
            tag=tag,
        )
    )


@app.command()
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


@app.command("eval")
def evaluate(
    qrels: ExistingPath,
    runs: Annotated[list[Path], typer.Argument(exists=True, help="One or more run files.")],
    measures: Annotated[str | None, typer.Option(help="Comma-separated, e.g. nDCG@10,RR@10,R@100.")] = None,
    per_query: Annotated[bool, typer.Option(help="One row per query as well.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate runs against qrels (trec_eval-compatible, through ir-measures), side by side."""
    from retrieval.evaluation import evaluate as run_eval
    from retrieval.evaluation import format_table

    table = run_eval(qrels, runs, measures=measures.split(",") if measures else None, per_query=per_query)
    typer.echo(json.dumps(table.to_dict(), indent=2) if as_json else format_table(table))


@app.command()
def doctor(
    embed_model: Annotated[
        str | None, typer.Option(help="Check this embedding model's recipe end to end.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit to check with.")] = None,
    quiet: Quiet = False,
) -> None:
    """Report the environment (versions, devices, faiss GPU support) and self-check an embedding model."""
    from retrieval.doctor import doctor as run_doctor

    report = run_doctor(embed_model, max_length=max_length)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        app()
    except LyreError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
