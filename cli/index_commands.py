"""``lyre ingest``, ``lyre index`` and ``lyre encode``: flags made from the declared options, one runner.

The options dataclasses of the stage modules (``IngestOptions``, ``Bm25Options``, ``EncodeOptions``,
``DenseOptions``) are the only place a default, range or help text of these commands is written;
:func:`cli.options.expand` turns each into flags. ``lyre index`` and ``lyre encode`` share one encode
option set, so an index started by one is finished by the other. The three share ``WriterOptions``
(``--wait``: one writer per index folder, the others refused or waiting); ``lyre index`` alone has
``VerifyOptions`` (``--verify``: hash every file and rebuild what fails). The index folder has its own
write lock and stage runner; :func:`cli.options.expand` only refuses an ``--out`` that is the corpus or
holds it, before any work.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from lyre.cli.common import Corpus, IndexToComplete, OutIndex, Quiet, unescape
from lyre.cli.options import expand
from lyre.indexes.bm25 import Bm25Options
from lyre.indexes.dense import DenseOptions
from lyre.indexes.encode import EncodeOptions
from lyre.indexes.ingest import IngestOptions
from lyre.indexes.passages import PassageOptions
from lyre.indexes.stages import VerifyOptions, WriterOptions


def _typed(encode: EncodeOptions) -> EncodeOptions:
    """A template typed in a shell carries a literal backslash-n; the model needs the newline."""
    return replace(encode, query_template=unescape(encode.query_template))


@expand
def ingest(
    corpus: Corpus, out: OutIndex, options: IngestOptions, writer: WriterOptions, quiet: Quiet = False
) -> None:
    """Stream a corpus (JSONL[.gz], TSV[.gz], Parquet, BEIR folder) into the index's Parquet docstore."""
    from lyre.indexes.ingest import ingest as run_ingest

    typer.echo(run_ingest(corpus, out, options, wait=writer.wait).summary)


@expand
def index(
    corpus: Corpus,
    out: OutIndex,
    ingest: IngestOptions,
    bm25: Bm25Options,
    encode: EncodeOptions,
    dense: DenseOptions,
    passages: PassageOptions,
    writer: WriterOptions,
    integrity: VerifyOptions,
    bm25_only: Annotated[bool, typer.Option(help="Build the docstore and BM25 only.")] = False,
    quiet: Quiet = False,
) -> None:
    """Build or resume an index (docstore, BM25, embeddings, Faiss shards); reruns redo what is missing."""
    from lyre.indexes.build import build_index

    lines = build_index(
        corpus,
        out,
        ingest=ingest,
        bm25=bm25,
        encode=_typed(encode),
        dense=dense,
        passages=passages,
        bm25_only=bm25_only,
        wait=writer.wait,
        verify=integrity.verify,
    )
    typer.echo("\n".join(lines))


@expand
def encode(
    index: IndexToComplete, options: EncodeOptions, writer: WriterOptions, quiet: Quiet = False
) -> None:
    """Encode the docstore of an index into embedding chunks (resumable; one slice with --shard-id)."""
    from lyre.indexes.encode import encode_stage

    typer.echo(encode_stage(index, _typed(options), wait=writer.wait).summary)
