"""``lyre ingest``, ``lyre index`` and ``lyre encode``: flags made from the declared options, one runner.

The options dataclasses of the stage modules (``IngestOptions``, ``Bm25Options``, ``EncodeOptions``,
``DenseOptions``) are the only place a default, range or help text of these commands is written;
:func:`cli.flags.flags_from_options` turns each into flags. ``lyre index`` and ``lyre encode`` share one
encode option set, so an index started by one is finished by the other. The three share
``WriterOptions`` (``--wait``: one writer per index folder, the others refused or waiting); ``lyre
index`` alone has ``VerifyOptions`` (``--verify``: hash every file and rebuild what fails). The index
folder has its own write lock and stage runner; the flag maker only refuses an ``--out`` that is the
corpus or holds it, before any work.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from lyre.cli.common import Corpus, IndexToComplete, OutIndex, Quiet, unescape
from lyre.cli.flags import flags_from_options
from lyre.indexes.bm25_build import Bm25Options
from lyre.indexes.build import build_index
from lyre.indexes.dense_stage import DenseOptions
from lyre.indexes.encode import EncodeOptions, encode_stage
from lyre.indexes.ingest import IngestOptions
from lyre.indexes.ingest import ingest as run_ingest
from lyre.indexes.passages import PassageOptions
from lyre.indexes.stages import VerifyOptions, WriterOptions


def _typed(encode: EncodeOptions) -> EncodeOptions:
    """A template typed in a shell carries a literal backslash-n; the model needs the newline."""
    return replace(encode, query_template=unescape(encode.query_template))


@flags_from_options
def ingest(
    corpus: Corpus, out: OutIndex, options: IngestOptions, writer: WriterOptions, quiet: Quiet = False
) -> None:
    """Stream a corpus (JSONL[.gz], TSV[.gz], Parquet, BEIR folder) into the index's Parquet docstore."""
    typer.echo(run_ingest(corpus, out, options, wait=writer.wait).summary)


@flags_from_options
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


@flags_from_options
def encode(
    index: IndexToComplete, options: EncodeOptions, writer: WriterOptions, quiet: Quiet = False
) -> None:
    """Encode the docstore of an index into embedding chunks (resumable; one slice with --slice-id)."""
    typer.echo(encode_stage(index, _typed(options), wait=writer.wait).summary)
