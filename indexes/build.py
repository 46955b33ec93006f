"""`lyre index`: the index stages in order through the one runner (``indexes/stages.py``).

Stages: ingest -> BM25 -> encode -> dense; with ``--passage-tokens``, ingest -> passages -> BM25 -> encode
-> dense, BM25 and the embeddings built over the passages (``indexes/passage_stage.py``). The runner
validates every stage's options first, keeps what is current, rebuilds what changed together with what
derives from it, and records each stage last; so a rerun of the same command after an interruption
redoes only what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lyre.basics.declared import check_options
from lyre.indexes.bm25_build import Bm25Options
from lyre.indexes.bm25_stage import Bm25Stage
from lyre.indexes.dense_stage import DenseOptions, DenseStage
from lyre.indexes.encode import EncodeOptions, EncodeStage, is_slice
from lyre.indexes.ingest import IngestOptions, IngestStage
from lyre.indexes.manifest import DENSE, DOCSTORE, PASSAGES
from lyre.indexes.passage_stage import PassageStage
from lyre.indexes.passages import PassageOptions
from lyre.indexes.stages import Stage, StageResult, run_stages


def build_index(
    corpus: Path,
    out: Path,
    *,
    ingest: IngestOptions | None = None,
    bm25: Bm25Options | None = None,
    encode: EncodeOptions | None = None,
    dense: DenseOptions | None = None,
    passages: PassageOptions | None = None,
    bm25_only: bool = False,
    wait: bool = False,
    verify: bool = False,
) -> list[str]:
    """Build or complete the index at ``out``; one summary line per stage. The runner holds the folder's
    lock throughout (``wait``: wait for another command using it) and checks every recorded file's size
    (``verify``: its SHA-256), rebuilding the stages that fail."""
    encode = encode or EncodeOptions()
    ingest = ingest or IngestOptions()
    passages = passages or PassageOptions()
    passages.validate()
    store = DOCSTORE if passages.passage_tokens is None else PASSAGES
    ingest_stage = IngestStage(corpus)
    plan: list[tuple[Stage[Any], Any]] = [(ingest_stage, ingest)]
    if store == PASSAGES:
        plan.append((PassageStage(None if bm25_only else encode), passages))
    plan.append((Bm25Stage(store=store), bm25 or Bm25Options()))
    if bm25_only:
        return [result.summary for result in run_stages(out, plan, wait=wait, verify=verify)]
    encode_stage = EncodeStage(store=store)
    plan.append((encode_stage, encode))
    dense = dense or DenseOptions()
    sliced = is_slice(encode)
    if sliced:
        check_options(dense)  # not built in a slice, but a typo should not wait for the finalize run
    else:
        # What the dense options are checked against before any work: the corpus, counted as ingest
        # reads it, and the dimension of the model's vectors (its config, resolved when encode validates).
        dense_stage = DenseStage(
            store=store,
            count_corpus=lambda limit: ingest_stage.count_documents(ingest, limit),
            planned_dim=lambda: encode_stage.model(encode).dim,
        )
        plan.append((dense_stage, dense))
    results: list[StageResult] = run_stages(out, plan, wait=wait, verify=verify, sliced=sliced)
    lines = [result.summary for result in results]
    if sliced:
        # Array tasks finish at different times; only the finalize run (no slice) may train IVF-PQ,
        # otherwise two tasks could write the same dense folder at once.
        lines.append(f"{DENSE}: left to the finalize step: rerun `lyre index` without slice options")
    elif len(results) < len(plan):
        lines.append(f"{DENSE}: waiting for the missing embedding chunks; rerun `lyre index` to finish them")
    return lines
