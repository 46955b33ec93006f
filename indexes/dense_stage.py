"""The dense stage: embeddings -> Faiss shards (``INDEX/dense/``, see :mod:`indexes.dense_files`), with its
options and every check of them that can be made before any work.

A build trains IVF-PQ (or not, for an exact flat index), adds the shards (:mod:`indexes.dense_build`),
tunes nprobe and the refine depth on build-time queries (:mod:`indexes.dense_tuning`) and records what it
built; searching it is :mod:`indexes.dense_search`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from lyre.basics import progress
from lyre.basics.atomic import write_json_atomic
from lyre.basics.declared import option
from lyre.basics.errors import OptionError, opt
from lyre.basics.numbers import count, measure
from lyre.basics.provenance import provenance
from lyre.indexes import faiss_params
from lyre.indexes.dense_build import build_shards, complete_store, prepare_dir, shard_layout, train
from lyre.indexes.dense_files import (
    BUILD_FILE,
    FAISS_DISTRIBUTIONS,
    PARAMS_FILE,
    DenseBuild,
    DenseParams,
    load_cpu_shards,
)
from lyre.indexes.dense_search import DenseIndex
from lyre.indexes.dense_tuning import DEFAULT_TUNE_QUERIES, RECALL_DEPTH, tune
from lyre.indexes.manifest import DENSE, DOCSTORE, EMBEDDINGS
from lyre.indexes.metadata import StageRecord
from lyre.indexes.source_store import store_rows
from lyre.indexes.stages import (
    Invalidate,
    StageResult,
    Upstream,
    overwrite_option,
    required_upstream,
    run_stage,
    stage_files,
)

DEFAULT_SHARD_ROWS = 1_000_000
"""Rows per shard file: 1M IVF-PQ rows take ~100 MB (m=96), 1M flat 384-d rows 1.5 GB."""
MIN_IVFPQ_ROWS = 1 << faiss_params.NBITS
"""Product quantization trains 2^nbits centroids per sub-quantizer, so it needs at least that many vectors."""
IVFPQ_ONLY = ("nlist", "pq_m", "nprobe", "refine")


@dataclass(frozen=True)
class DenseOptions:
    """Which Faiss index is built over the embeddings, and how its search is tuned."""

    index_type: str = option(
        "auto",
        f"auto (flat below {count(faiss_params.FLAT_MAX_ROWS)} vectors, else ivfpq), flat (exact) or ivfpq.",
        choices=faiss_params.INDEX_TYPES,
    )
    shard_rows: int = option(DEFAULT_SHARD_ROWS, "Vectors per Faiss shard file.", minimum=1)
    nlist: int | None = option(None, "IVF lists (default: about 4 x sqrt(N)).", minimum=1)
    pq_m: int | None = option(None, "PQ bytes per vector (default: from the dimension).", minimum=1)
    recall_target: float = option(
        0.95, "Overlap@100 with exact search that nprobe/refine tuning aims for.", above=0, maximum=1
    )
    nprobe: int | None = option(None, "Fix nprobe instead of tuning it.", minimum=1)
    refine: int | None = option(
        None, "Fix the exact re-scoring depth instead of tuning it (0: none).", minimum=0
    )
    train_sample: int | None = option(
        None, "Vectors the quantizers are trained on (default: from N).", cli=False
    )
    tune_queries: int = option(
        DEFAULT_TUNE_QUERIES, "Queries made for tuning nprobe/refine.", minimum=1, cli=False
    )
    seed: int = option(0, "Seed of the training sample and the tuning queries.", cli=False)
    overwrite: bool = overwrite_option()

    def params(self) -> dict[str, Any]:
        """The options that decide the dense index (its record's params)."""
        return {name: value for name, value in asdict(self).items() if name != "overwrite"}


def check_without_rows(options: DenseOptions, dim: int | None) -> None:
    """What is refused whatever the number of vectors: IVF-PQ settings for an index asked to be flat, and
    a PQ code that does not divide the dimension (refused as such for IVF-PQ, and as an IVF-PQ setting
    for flat). Checked as soon as the dimension is known, before the vectors exist."""
    if options.index_type == "flat":
        for name in IVFPQ_ONLY:
            if getattr(options, name) is not None:
                raise OptionError(
                    name,
                    getattr(options, name),
                    f"applies only to an ivfpq index, not to {opt('index_type')} flat",
                )
    if options.pq_m is not None and dim is not None:
        try:
            faiss_params.check_m(options.pq_m, dim)
        except ValueError as error:
            raise OptionError("pq_m", options.pq_m, str(error)) from None


def dense_shape(
    num_rows: int, dim: int | None, options: DenseOptions, holds: str | None = None
) -> tuple[faiss_params.IndexType, faiss_params.IvfPqParams | None]:
    """The index type and IVF-PQ shape for N vectors, with every option checked against them; with the
    dimension not known yet (None), only what N decides. ``holds``: how messages name the count
    (default ``this index has N vectors``). Each refusal for N is also one for every smaller N, so a
    caller knowing only an upper bound of N may check with it (:meth:`DenseStage.validate`)."""
    holds = holds or f"this index has {count(num_rows, 'vectors')}"
    check_without_rows(options, dim)
    kind = faiss_params.choose_index_type(num_rows, options.index_type)
    if kind == "flat":
        for name in IVFPQ_ONLY:
            if getattr(options, name) is not None:
                raise OptionError(
                    name,
                    getattr(options, name),
                    f"applies only to an ivfpq index, and {holds}, which get a flat index with "
                    f"{opt('index_type')} auto (below {count(faiss_params.FLAT_MAX_ROWS, 'vectors')})",
                )
        return kind, None
    if num_rows < MIN_IVFPQ_ROWS:
        raise OptionError(
            "index_type",
            kind,
            f"needs at least {count(MIN_IVFPQ_ROWS, 'vectors')} to train its PQ codebooks and {holds}; "
            "use flat (exact search, and fast at this size)",
        )
    if dim is None:
        return kind, None
    m = options.pq_m if options.pq_m is not None else faiss_params.default_m(dim)
    try:
        shape = faiss_params.ivfpq_params(
            num_rows, dim, nlist=options.nlist, m=m, train_sample=options.train_sample
        )
    except ValueError as error:
        raise OptionError("nlist", options.nlist, f"{error} ({holds})") from None
    if shape.train_sample < MIN_IVFPQ_ROWS:  # set only by library callers (no command has it)
        raise ValueError(f"train_sample {shape.train_sample}: must be at least {MIN_IVFPQ_ROWS} for IVF-PQ")
    return kind, shape


def rows_deciding(options: DenseOptions) -> int:
    """How many vectors decide whether :func:`dense_shape` refuses ``options``: below this count it may,
    from it on it accepts them whatever the count (0: the count decides nothing)."""
    if options.index_type == "ivfpq":
        return max(MIN_IVFPQ_ROWS, options.nlist or 0)
    if options.index_type == "auto" and any(getattr(options, name) is not None for name in IVFPQ_ONLY):
        return faiss_params.FLAT_MAX_ROWS
    return 0


def _describe(params: DenseParams, shape: faiss_params.IvfPqParams | None, per_vector: float) -> str:
    """The stage's summary: what was built and, for IVF-PQ, how its search was tuned."""
    vectors, shards = count(params.num_rows, "vectors"), count(params.num_shards, "shards")
    if shape is None:
        return f"exact flat index over {vectors} in {shards}"
    return (
        f"{shape.factory} over {vectors} in {shards}, {per_vector} bytes/vector; nprobe {params.nprobe}, "
        f"refine {params.refine} (overlap@{RECALL_DEPTH} with exact search {measure(params.recall or 0.0)} "
        "on build-time queries)"
    )


@dataclass
class DenseStage:
    """Embeddings -> Faiss shards (the "dense" stage)."""

    name: ClassVar[str] = DENSE
    store: str = DOCSTORE
    """The store the embeddings encode (the passages of a passage index): its rows are the vectors."""
    count_corpus: Callable[[int], int] | None = None
    """For a command that ingests the corpus first: counts its documents, stopping at the limit given
    (``IngestStage.count_documents``), so options that depend on the number of vectors are refused
    before ingest, BM25 and the encoding rather than after them."""
    planned_dim: Callable[[], int] | None = None
    """For a command that encodes the vectors first: their dimension, from the model's config."""

    def validate(self, index_dir: Path, options: DenseOptions, upstream: Upstream) -> None:
        """Every option checked against the number of vectors and their dimension, as far as they are
        known before any work: recorded by the stages this command keeps, or, for a corpus it ingests,
        counted with ingest's reader up to the count that decides (:func:`rows_deciding`: 256 records
        for ``ivfpq``, so this costs milliseconds). Documents are an upper bound of the vectors (a
        record ingest skips or finds a duplicate makes no vector), and a refusal for N is one for
        every smaller N, so what this refuses the build would refuse too. Passages are counted only
        when split, so a passage index built from its corpus is checked when its embeddings are."""
        embeddings = required_upstream(index_dir, upstream, EMBEDDINGS)
        if embeddings is not None:
            dense_shape(embeddings.counts["documents"], embeddings.params["dim"], options)
            return
        dim = self.planned_dim() if self.planned_dim is not None else None
        source = upstream.get(self.store)
        if source is not None:  # vectors encoded by this command from a store it keeps: N is known
            dense_shape(store_rows(source), dim, options)
        elif self.store == DOCSTORE and self.count_corpus is not None and (limit := rows_deciding(options)):
            documents = self.count_corpus(limit)
            if documents < limit:
                dense_shape(documents, dim, options, holds=f"the corpus has {count(documents, 'documents')}")
        check_without_rows(options, dim)

    def is_current(self, index_dir: Path, record: StageRecord, options: DenseOptions) -> bool:
        return record.params == options.params()

    def discard_damaged(self, index_dir: Path, paths: list[str]) -> None:
        """Remove the damaged files so the build redoes them instead of resuming from them: a shard is
        rebuilt alone; a new quantizer (trained.faiss) rebuilds every shard; without the settings the
        shards were built with (build.json) nothing is kept."""
        dense_dir = index_dir / DENSE
        names = {Path(path).name for path in paths}
        if BUILD_FILE in names:
            shutil.rmtree(dense_dir, ignore_errors=True)
            return
        for name in names:
            (dense_dir / name).unlink(missing_ok=True)

    def build(self, index_dir: Path, options: DenseOptions, invalidate: Invalidate) -> StageResult:
        store = complete_store(index_dir)
        spec = store.spec
        kind, shape = dense_shape(spec.num_rows, spec.dim, options)
        if options.index_type == "auto":
            side = "below" if kind == "flat" else "at least"
            progress.say(
                f"dense: {kind} index ({count(spec.num_rows, 'vectors')}, {side} "
                f"{count(faiss_params.FLAT_MAX_ROWS)}); set the index type (flat or ivfpq) to choose"
            )
        shards = shard_layout(spec.num_rows, options.shard_rows)
        build = DenseBuild(
            index_type=kind,
            num_rows=spec.num_rows,
            dim=spec.dim,
            model=spec.model,
            shard_rows=options.shard_rows,
            num_shards=len(shards),
            seed=options.seed,
            **(shape.to_dict() if shape else {}),
        )
        dense_dir = index_dir / DENSE
        invalidate()
        prepare_dir(dense_dir, build, options.overwrite)

        started = time.perf_counter()
        template = train(dense_dir, store, shape, options.seed) if shape else None
        trained = time.perf_counter()
        build_shards(dense_dir, store, shards, template)
        added = time.perf_counter()

        index_bytes = sum((dense_dir / shard.file).stat().st_size for shard in shards)
        params = DenseParams(**asdict(build), shards=shards, recall_target=options.recall_target)
        if shape:
            searcher = DenseIndex(index_dir, params, load_cpu_shards(dense_dir, params))
            tuned = tune(
                searcher,
                store,
                target=options.recall_target,
                nprobe=options.nprobe,
                refine=options.refine,
                queries=options.tune_queries,
                seed=options.seed,
            )
            params = replace(params, **tuned)
        else:
            params = replace(params, recall=1.0)
        timings = {
            "train_s": round(trained - started, 3),
            "add_s": round(added - trained, 3),
            "tune_s": round(time.perf_counter() - added, 3),
        }
        per_vector = round(index_bytes / spec.num_rows, 2)
        params = replace(params, timings=timings, index_bytes=index_bytes, bytes_per_vector=per_vector)
        write_json_atomic(dense_dir / PARAMS_FILE, asdict(params))
        described = _describe(params, shape, per_vector)
        counts = {
            "vectors": spec.num_rows,
            "index_type": kind,
            "factory": shape.factory if shape else "IDMap,Flat",
            "num_shards": len(shards),
            "nprobe": params.nprobe,
            "refine": params.refine,
            "recall": params.recall,
            "bytes_per_vector": per_vector,
        }
        record = StageRecord(
            summary=described,
            params=options.params(),
            counts=counts,
            provenance=provenance(*FAISS_DISTRIBUTIONS, timings=timings),
            files=stage_files(index_dir, DENSE),
        )
        return StageResult(f"{DENSE}: {described}", record)


def build_dense(
    index_dir: str | Path, options: DenseOptions | None = None, *, wait: bool = False
) -> StageResult:
    """The "dense" stage alone, through the stage runner: INDEX/embeddings -> INDEX/dense."""
    return run_stage(Path(index_dir), DenseStage(), options or DenseOptions(), wait=wait)
