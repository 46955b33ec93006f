"""The dense stage: Faiss indexes over the embedding chunk store, one file per shard, and their search.

Layout of ``INDEX/dense/``::

    build.json              what the shards are built with (:class:`DenseBuild`); a build with other
                            settings starts again
    trained.faiss           the trained, empty IVF-PQ index (coarse quantizer + PQ codebooks), IVF-PQ only
    shard-000000.faiss      rows [0, shard_rows) added to a copy of trained.faiss with their global row ids
    params.json             build settings plus the nprobe / refine depth tuned to reach the recall target
                            (:class:`DenseParams`), read through the metadata reader by every search

IVF-PQ is trained once, on a seeded random sample, so every shard shares one quantizer: each shard can be
searched on its own (on its own GPU) and the per-shard top-k lists merge into exactly the top-k of one big
index. Shards are written atomically and skipped when already present, so an interrupted build resumes.
Flat shards (exact inner product) are the reference that IVF-PQ is tuned and measured against.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from lyre.basics import progress
from lyre.basics.atomic import atomic_path, write_json_atomic
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.options import option
from lyre.basics.provenance import provenance
from lyre.basics.resources import ResourceError, ensure_free_space, free_bytes, human_bytes, on_disk
from lyre.indexes import faiss_params
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.manifest import (
    DENSE,
    DOCSTORE,
    EMBEDDINGS,
    Manifest,
    StageFolder,
    load_manifest,
    require_record,
)
from lyre.indexes.metadata import MetadataError, StageRecord
from lyre.indexes.stages import (
    Forget,
    StageResult,
    Upstream,
    need,
    overwrite_option,
    run_stage,
    stage_files,
)
from lyre.indexes.torch_search import DeviceMemoryError, TorchFlatSearch, exact_scores

DENSE_DIR = DENSE
BUILD_FILE = "build.json"
PARAMS_FILE = "params.json"
TRAINED_FILE = "trained.faiss"
#: Rows per shard file: 1M IVF-PQ rows take ~100 MB (m=96), 1M flat 384-d rows 1.5 GB.
DEFAULT_SHARD_ROWS = 1_000_000
#: Tuning queries (midpoints of stored vectors): more give a steadier estimate and cost more searches.
DEFAULT_TUNE_QUERIES = 500
#: Recall is measured as overlap of the top-100 with exact search, the depth rerankers and R@100 see.
RECALL_DEPTH = 100
#: Vectors converted to float32 and added to Faiss at a time (bounds memory independently of chunk size).
ADD_BATCH = 65_536
#: Queries searched at a time: bounds the merge buffers (queries x shards x depth).
QUERY_BATCH = 1024
#: Candidate vectors fetched at a time for exact re-scoring (~100 MB at 384-d).
REFINE_FETCH = 65_536
#: k-means iterations per PQ sub-quantizer (Faiss default 25): low-dimensional sub-vectors converge early,
#: and at 96 sub-quantizers the iterations dominate training time (66 s -> 20 s on 65k x 384-d).
PQ_TRAIN_ITERATIONS = 10
#: Tuned nprobe is this multiple of the one reaching the target on build-time queries (see _tune).
NPROBE_MARGIN = 2
#: What a Faiss index file holds beside its vectors, ids, centroids and codebooks: under 200 bytes measured.
FAISS_HEADER_BYTES = 4096
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu")


def _faiss() -> Any:
    import faiss

    return faiss


@dataclass(frozen=True)
class DenseShard:
    """One shard file and the rows [start, stop) it holds."""

    file: str
    rows: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class DenseBuild:
    """``build.json``: what the shards are built with. A build finding other settings there starts again,
    so shards made with other settings are never mixed."""

    index_type: Literal["flat", "ivfpq"]
    num_rows: int
    dim: int
    model: str
    shard_rows: int
    num_shards: int
    seed: int
    nlist: int | None = None
    m: int | None = None
    nbits: int | None = None
    train_sample: int | None = None
    float16_lookup_tables: bool = False
    factory: str | None = None

    def __post_init__(self) -> None:
        if self.num_rows < 1 or self.dim < 1 or self.shard_rows < 1:
            raise ValueError("num_rows, dim and shard_rows must be at least 1")
        if self.num_shards != -(-self.num_rows // self.shard_rows):
            raise ValueError(
                f"{self.num_rows:,} rows in shards of {self.shard_rows:,} are not {self.num_shards}"
            )
        if self.index_type == "ivfpq" and (self.nlist is None or self.nlist < 1):
            raise ValueError("an ivfpq index needs nlist >= 1")


@dataclass(frozen=True, kw_only=True)
class DenseParams(DenseBuild):
    """``params.json``: the build settings, the shards, and the search settings tuned at build time."""

    shards: tuple[DenseShard, ...]
    recall_target: float
    nprobe: int | None = None
    refine: int = 0
    recall: float | None = None
    """Overlap@100 with exact search on build-time queries (1.0 for flat); None while tuning."""
    nprobe_reached: int | None = None
    tuning: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    index_bytes: int | None = None
    bytes_per_vector: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        expected = [
            (s * self.shard_rows, min((s + 1) * self.shard_rows, self.num_rows))
            for s in range(self.num_shards)
        ]
        if [shard.rows for shard in self.shards] != expected:
            raise ValueError(
                f"the shards do not cover rows 0..{self.num_rows:,} in shards of {self.shard_rows:,}"
            )
        if any(Path(shard.file).name != shard.file for shard in self.shards):
            raise ValueError("shard files must be file names in the dense folder")


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.faiss"


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each query's candidates: score descending, ties by row ascending, misses (-1) last.

    Used both to merge shards and to rank refined scores, so the order never depends on shard layout.
    """
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    best_rows = np.take_along_axis(rows, order, axis=1)
    best_scores = np.take_along_axis(scores, order, axis=1)
    if best_rows.shape[1] < k:
        pad = k - best_rows.shape[1]
        best_rows = np.pad(best_rows, ((0, 0), (0, pad)), constant_values=-1)
        best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return best_rows.astype(np.int64), best_scores


def overlap_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top rows that ``found`` also returns (recall vs exact search)."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def exact_search(store: EmbeddingStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over every stored vector, one chunk in memory at a time."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.full((len(queries), 0), -1, dtype=np.int64)
    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for chunk_rows, vectors in store.iter_chunks():
        chunk_scores = queries @ np.asarray(vectors, dtype=np.float32).T
        keep = min(k, chunk_scores.shape[1])
        part = np.argpartition(-chunk_scores, keep - 1, axis=1)[:, :keep]
        rows = np.concatenate([rows, chunk_rows[part]], axis=1)
        scores = np.concatenate([scores, np.take_along_axis(chunk_scores, part, axis=1)], axis=1)
        rows, scores = top_k(rows, scores, min(k, rows.shape[1]))
    return top_k(rows, scores, k)


def _complete_store(index_dir: Path) -> EmbeddingStore:
    """The embedding store of ``index_dir``, refused unless every chunk is there."""
    store = EmbeddingStore.open(index_dir / EMBEDDINGS)
    missing = store.missing_chunks()
    if missing:
        raise LyreError(
            f"{store.directory}: {len(missing)} of {store.spec.num_chunks} embedding chunks are missing "
            f"(first: {missing[0]}); finish every {opt('shard_id')} slice of the encoding, then build again"
        )
    return store


def _iter_rows(store: EmbeddingStore, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row ids, float32 vectors) of rows [start, stop), streamed from the chunks in ADD_BATCH pieces."""
    chunk_rows = store.spec.chunk_rows
    for chunk in range(start // chunk_rows, (stop - 1) // chunk_rows + 1):
        rows, vectors = store.chunk(chunk)
        first = int(rows[0])
        lo, hi = max(start - first, 0), min(stop - first, len(rows))
        for begin in range(lo, hi, ADD_BATCH):
            end = min(begin + ADD_BATCH, hi)
            yield rows[begin:end], np.asarray(vectors[begin:end], dtype=np.float32)


def _prepare_dir(dense_dir: Path, build: DenseBuild, overwrite: bool) -> None:
    """Keep what an interrupted build with the same settings left; start fresh otherwise (or when
    overwriting, or when ``build.json`` is damaged: the files beside it cannot be trusted), and record the
    settings the files are being built with."""
    build_path = dense_dir / BUILD_FILE
    if build_path.exists() and not overwrite:
        try:
            found = asdict(StageFolder.locate(dense_dir).read(BUILD_FILE, DenseBuild))
            wanted = asdict(build)
            differing = sorted(key for key in wanted if found[key] != wanted[key])
            reason = f"were built with other settings ({', '.join(differing)})"
        except MetadataError as error:
            differing, reason = [BUILD_FILE], f"have a damaged {BUILD_FILE} ({error.problem})"
        if differing:
            progress.say(f"dense: the files here {reason}; rebuilding")
            overwrite = True
    if overwrite and dense_dir.exists():
        shutil.rmtree(dense_dir)
    dense_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(build_path, asdict(build))


def _train(dense_dir: Path, store: EmbeddingStore, shape: faiss_params.IvfPqParams, seed: int) -> Any:
    """The trained empty IVF-PQ index: loaded when present, else trained on a seeded sample and saved.

    A newly trained index invalidates every shard file, since shards must share its quantizer.
    """
    faiss = _faiss()
    path = dense_dir / TRAINED_FILE
    if path.exists():
        return faiss.read_index(str(path))
    for stale in dense_dir.glob("shard-*.faiss"):
        stale.unlink()
    spec = store.spec
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(spec.num_rows, size=shape.train_sample, replace=False))
    sample = store.fetch(sample_rows)
    index = faiss.index_factory(spec.dim, shape.factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.do_polysemous_training = False  # the factory turns it on; search never uses it and it costs minutes
    ivf.pq.cp.niter = PQ_TRAIN_ITERATIONS
    codebook_points = faiss_params.MIN_POINTS_PER_CENTROID * (1 << shape.nbits)
    if shape.train_sample < codebook_points:
        progress.say(
            f"dense: PQ codebooks trained on {shape.train_sample} vectors "
            f"(Faiss advises >= {codebook_points}); recall is tuned and recorded below"
        )
        ivf.pq.cp.min_points_per_centroid = 1  # our line above replaces Faiss's repeated warning
    progress.say(f"dense: training {shape.factory} on {shape.train_sample} vectors")
    index.train(sample)
    _write_index(index, path, _trained_bytes(shape.nlist, spec.dim, shape.nbits))
    return index


def _write_index(index: Any, path: Path, expected_bytes: int) -> None:
    """Save a Faiss index atomically. Faiss reports a failed write (a full disk, a quota, a file-size
    limit) as a RuntimeError with a C++ trace: free space is checked first, and a failure is one line
    naming the file."""
    faiss = _faiss()
    ensure_free_space(path.parent, expected_bytes)
    try:
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
    except RuntimeError as error:
        reason = next((line.strip() for line in reversed(str(error).splitlines()) if line.strip()), "")
        raise ResourceError(
            f"{path}: Faiss could not write it ({reason[:200]}; {human_bytes(free_bytes(path.parent))} "
            f"free in {path.parent}); free space there, or choose another {opt('out')}"
        ) from None


def _build_shard(path: Path, store: EmbeddingStore, template: Any, start: int, stop: int, bar: Any) -> None:
    """Add rows [start, stop) with their global ids to a copy of ``template`` and save it atomically."""
    faiss = _faiss()
    if template is None:
        index = faiss.IndexIDMap(faiss.IndexFlatIP(store.spec.dim))
    else:
        index = faiss.clone_index(template)
    for rows, vectors in _iter_rows(store, start, stop):
        index.add_with_ids(vectors, rows)
        bar.update(len(rows))
    _write_index(index, path, _shard_bytes(index, store.spec.dim, stop - start))


def _trained_bytes(nlist: int, dim: int, nbits: int) -> int:
    """What a trained, empty IVF-PQ index takes on disk: float32 coarse centroids and PQ codebooks
    (2^nbits centroids of every sub-vector: as many floats as 2^nbits vectors), and the headers."""
    return on_disk(nlist * dim * 4 + (1 << nbits) * dim * 4 + FAISS_HEADER_BYTES)


def _shard_bytes(index: Any, dim: int, rows: int) -> int:
    """What a shard file will take on disk: each vector's code (float32 values for flat, PQ bytes for
    IVF-PQ) and its 64-bit id; for IVF-PQ also the trained quantizers and each list's length (measured:
    within 200 bytes of the file Faiss writes, SciFact's 5,183 x 384 flat and IVF64,PQ96 shards)."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return on_disk(rows * (dim * 4 + 8) + FAISS_HEADER_BYTES)
    nbits = faiss.downcast_index(ivf).pq.nbits
    return on_disk(rows * (ivf.code_size + 8) + ivf.nlist * 8) + _trained_bytes(ivf.nlist, dim, nbits)


def _tune(
    searcher: DenseIndex,
    store: EmbeddingStore,
    *,
    target: float,
    nprobe: int | None,
    refine: int | None,
    queries: int,
    seed: int,
) -> dict[str, Any]:
    """Smallest refine depth, then smallest nprobe, whose overlap@100 with exact search reaches ``target``.

    Queries are built from stored vectors: the normalised midpoint of two random ones (seeded). A stored
    vector itself finds itself and sits inside its cluster, which overstates the recall real queries get
    (SciFact, MiniLM, nprobe 32 + refine 200: 0.962 for stored vectors, 0.946 for midpoints, 0.933 for
    the real test queries). A sweep stops when more probes stop helping (the PQ ceiling); a deeper exact
    re-scoring is tried next. Even midpoints overstate real queries on collections whose queries lie far
    from every document (NFCorpus: 0.988 vs 0.946 at nprobe 32 + refine 200), so the nprobe that reaches
    the target is multiplied by NPROBE_MARGIN (capped at nlist). Values given by the caller are measured,
    not tuned.
    """
    depth = min(RECALL_DEPTH, store.spec.num_rows)
    rng = np.random.default_rng(seed + 1)
    pairs = rng.integers(0, store.spec.num_rows, size=(2, queries))
    sample = store.fetch(pairs[0]) + store.fetch(pairs[1])
    sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    truth, _ = exact_search(store, sample, depth)
    nlist = searcher.params.nlist or 1
    probes = [nprobe] if nprobe is not None else faiss_params.nprobe_candidates(nlist)
    depths = (
        [refine] if refine is not None else [r for r in faiss_params.REFINE_DEPTHS if r == 0 or r > depth]
    )
    table: list[dict[str, Any]] = []
    for refine_depth in depths:
        previous = -1.0
        for probe in probes:
            found, _ = searcher.search(sample, depth, nprobe=probe, refine=refine_depth)
            recall = overlap_at(found, truth)
            table.append({"nprobe": probe, "refine": refine_depth, "recall": round(recall, 4)})
            if recall >= target:
                if nprobe is not None or probe >= nlist:
                    return {"nprobe": probe, "refine": refine_depth, "recall": recall, "tuning": table}
                safe = min(probe * NPROBE_MARGIN, nlist)
                found, _ = searcher.search(sample, depth, nprobe=safe, refine=refine_depth)
                recall = overlap_at(found, truth)
                table.append(
                    {"nprobe": safe, "refine": refine_depth, "recall": round(recall, 4), "margin": True}
                )
                return {
                    "nprobe": safe,
                    "nprobe_reached": probe,
                    "refine": refine_depth,
                    "recall": recall,
                    "tuning": table,
                }
            if recall - previous < 0.002:
                break
            previous = recall
    best = max(table, key=lambda row: row["recall"])
    progress.say(
        f"dense: recall target {target} not reached; using the best measured, overlap@{depth} "
        f"{best['recall']:.3f} at nprobe {best['nprobe']}, refine {best['refine']}"
    )
    return {"nprobe": best["nprobe"], "refine": best["refine"], "recall": best["recall"], "tuning": table}


@dataclass(frozen=True)
class DenseOptions:
    """Which Faiss index is built over the embeddings, and how its search is tuned."""

    index_type: str = option(
        "auto",
        f"auto (flat below {faiss_params.FLAT_MAX_ROWS:,} vectors, else ivfpq), flat (exact) or ivfpq.",
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


#: Product quantization trains 2^nbits centroids per sub-quantizer, so it needs at least that many vectors.
MIN_IVFPQ_ROWS = 1 << faiss_params.NBITS
IVFPQ_ONLY = ("nlist", "pq_m", "nprobe", "refine")


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
) -> tuple[str, faiss_params.IvfPqParams | None]:
    """The index type and IVF-PQ shape for N vectors, with every option checked against them; with the
    dimension not known yet (None), only what N decides. ``holds``: how messages name the count
    (default ``this index has N``). Each refusal for N is also one for every smaller N, so a caller
    knowing only an upper bound of N may check with it (:meth:`DenseStage.validate`)."""
    holds = holds or f"this index has {num_rows:,}"
    check_without_rows(options, dim)
    kind = faiss_params.choose_index_type(num_rows, options.index_type)
    if kind == "flat":
        for name in IVFPQ_ONLY:
            if getattr(options, name) is not None:
                raise OptionError(
                    name,
                    getattr(options, name),
                    f"applies only to an ivfpq index, and {holds}, which get a flat index with "
                    f"{opt('index_type')} auto (below {faiss_params.FLAT_MAX_ROWS:,} vectors)",
                )
        return kind, None
    if num_rows < MIN_IVFPQ_ROWS:
        raise OptionError(
            "index_type",
            kind,
            f"needs at least {MIN_IVFPQ_ROWS} vectors to train its PQ codebooks and {holds}; "
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
        from lyre.indexes.passage_stage import store_rows

        embeddings = need(index_dir, upstream, EMBEDDINGS)
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
                dense_shape(documents, dim, options, holds=f"the corpus has {documents:,} documents")
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

    def build(self, index_dir: Path, options: DenseOptions, forget: Forget) -> StageResult:
        store = _complete_store(index_dir)
        spec = store.spec
        kind, shape = dense_shape(spec.num_rows, spec.dim, options)
        if options.index_type == "auto":
            side = "below" if kind == "flat" else "at least"
            progress.say(
                f"dense: {kind} index ({spec.num_rows} vectors, {side} {faiss_params.FLAT_MAX_ROWS}); "
                "set the index type (flat or ivfpq) to choose"
            )
        shard_rows = options.shard_rows
        num_shards = (spec.num_rows + shard_rows - 1) // shard_rows
        shaped = shape.to_dict() if shape else {}
        build = DenseBuild(
            index_type=kind,  # type: ignore[arg-type]
            num_rows=spec.num_rows,
            dim=spec.dim,
            model=spec.model,
            shard_rows=shard_rows,
            num_shards=num_shards,
            seed=options.seed,
            **shaped,
        )
        dense_dir = index_dir / DENSE
        forget()
        _prepare_dir(dense_dir, build, options.overwrite)

        started = time.perf_counter()
        template = _train(dense_dir, store, shape, options.seed) if shape else None
        trained = time.perf_counter()
        shards = tuple(
            DenseShard(shard_name(s), (s * shard_rows, min((s + 1) * shard_rows, spec.num_rows)))
            for s in range(num_shards)
        )
        todo = [s for s in shards if not (dense_dir / s.file).exists()]
        if len(todo) < len(shards):
            progress.say(f"dense: {len(shards) - len(todo)} of {len(shards)} shards already built; resuming")
        with progress.bar(sum(s.rows[1] - s.rows[0] for s in todo), desc="dense add") as bar:
            for shard in todo:
                _build_shard(dense_dir / shard.file, store, template, *shard.rows, bar)
        added = time.perf_counter()

        index_bytes = sum((dense_dir / s.file).stat().st_size for s in shards)
        params = DenseParams(**asdict(build), shards=shards, recall_target=options.recall_target)
        if shape:
            searcher = DenseIndex(index_dir, params, _load_cpu(dense_dir, params))
            tuned = _tune(
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
        if shape:
            described = (
                f"{shape.factory} over {spec.num_rows} vectors in {num_shards} shard(s), "
                f"{per_vector} bytes/vector; nprobe {params.nprobe}, refine {params.refine} "
                f"(overlap@{RECALL_DEPTH} with exact search {params.recall:.3f} on build-time queries)"
            )
        else:
            described = f"exact flat index over {spec.num_rows} vectors in {num_shards} shard(s)"
        counts = {
            "vectors": spec.num_rows,
            "index_type": kind,
            "factory": shape.factory if shape else "IDMap,Flat",
            "num_shards": num_shards,
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


def _read_flags(faiss: Any, index_type: str) -> int:
    """Faiss read flags that memory-map a shard instead of loading it (0 where unsupported)."""
    if index_type == "ivfpq":
        return getattr(faiss, "IO_FLAG_MMAP", 0)
    return getattr(faiss, "IO_FLAG_MMAP_IFC", 0)


def _load_cpu(dense_dir: Path, params: DenseParams) -> list[Any]:
    faiss = _faiss()
    flags = _read_flags(faiss, params.index_type)
    return [faiss.read_index(str(dense_dir / shard.file), flags) for shard in params.shards]


def _gpu_support(faiss: Any) -> tuple[int, str]:
    """(GPUs Faiss can use, why none when 0)."""
    if not hasattr(faiss, "StandardGpuResources"):
        installed = [name for name in FAISS_DISTRIBUTIONS if _installed(name)]
        return 0, f"faiss has no GPU support ({', '.join(installed) or 'faiss'} installed)"
    count = faiss.get_num_gpus()
    return count, "" if count else "faiss has GPU support but sees no GPU"


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


#: Where dense search may run, and with what (see _place).
DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "faiss", "torch")


def _torch_gpus() -> list[str]:
    """The CUDA devices torch can use ("cuda:0", ...); none without CUDA torch."""
    try:
        import torch
    except ImportError:
        return []
    return [f"cuda:{gpu}" for gpu in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@dataclass
class Placement:
    """Where each part of a dense search runs, and the line that says so."""

    shards: list[Any]
    """Faiss indexes (empty when torch searches a flat index)."""
    on_gpu: list[bool]
    line: str
    torch_flat: TorchFlatSearch | None = None
    refine_device: str | None = None
    """The torch device of the exact refine (None: numpy on the CPU)."""


def _cpu_placement(
    dense_dir: Path, params: DenseParams, reason: str, refine_device: str | None = None
) -> Placement:
    indexes = _load_cpu(dense_dir, params)
    line = f"dense search: {params.index_type}, Faiss CPU ({reason})"
    if refine_device:
        line += f"; exact refine with torch on {refine_device}"
    return Placement(indexes, [False] * len(indexes), line, refine_device=refine_device)


def _torch_placement(index_dir: Path, params: DenseParams, devices: list[str], reason: str) -> Placement:
    """Flat: every shard's float16 vectors on the torch devices (Faiss CPU when they do not fit).
    IVF-PQ: the PQ scan stays on Faiss CPU (torch has no IVF-PQ), the exact refine runs on the device."""
    dense_dir = index_dir / DENSE_DIR
    if params.index_type != "flat":
        return _cpu_placement(dense_dir, params, reason, refine_device=devices[0])
    store = EmbeddingStore.open(index_dir / EMBEDDINGS)
    try:
        flat = TorchFlatSearch.load(store, [shard.rows for shard in params.shards], devices)
    except DeviceMemoryError as error:
        return _cpu_placement(dense_dir, params, f"{reason}; torch refused: {error}")
    return Placement([], [], f"dense search: flat, torch on {', '.join(flat.devices)} ({reason})", flat)


def _place(index_dir: Path, params: DenseParams, device: str, engine: str) -> Placement:
    """faiss-gpu where it sees GPUs; else torch on CUDA GPUs (flat search, IVF-PQ's exact refine); else
    Faiss on the CPU. ``engine`` forces Faiss or torch (torch on the CPU with ``device="cpu"``)."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: use one of {', '.join(DEVICES)}")
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    faiss = _faiss()
    dense_dir = index_dir / DENSE_DIR
    count, why = _gpu_support(faiss)
    torch_gpus = [] if device == "cpu" else _torch_gpus()
    if engine == "torch":
        if device == "cuda" and not torch_gpus:
            raise LyreError("torch sees no CUDA GPU for the dense search; search on a GPU machine or the CPU")
        return _torch_placement(index_dir, params, torch_gpus or ["cpu"], "engine torch asked for")
    if device == "cpu":
        return _cpu_placement(dense_dir, params, "device cpu asked for")
    if not count and torch_gpus and engine == "auto":
        return _torch_placement(index_dir, params, torch_gpus, why)
    if not count:
        if device == "cuda":
            raise LyreError(f"{why}; install faiss-gpu-cu12 on a GPU machine, or search on the CPU")
        return _cpu_placement(dense_dir, params, why)
    options = faiss.GpuClonerOptions()
    options.useFloat16 = params.float16_lookup_tables  # IVF-PQ: float16 lookup tables
    resources = [faiss.StandardGpuResources() for _ in range(count)]
    flags = _read_flags(faiss, params.index_type)
    shards = params.shards
    indexes: list[Any] = []
    on_gpu: list[bool] = []
    failures: list[str] = []
    for number, shard in enumerate(shards):
        path = str(dense_dir / shard.file)
        gpu = number % count
        try:
            indexes.append(faiss.index_cpu_to_gpu(resources[gpu], gpu, faiss.read_index(path), options))
            on_gpu.append(True)
        except (RuntimeError, MemoryError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:120]
            failures.append(f"{shard.file} on GPU {gpu}: {reason}")
            indexes.append(faiss.read_index(path, flags))
            on_gpu.append(False)
    tables = ", float16 lookup tables" if options.useFloat16 else ""
    line = (
        f"dense search: {params.index_type}, faiss-gpu on {min(count, len(shards))} GPU(s): "
        f"{sum(on_gpu)} of {len(shards)} shards{tables}"
    )
    if failures:
        line += f"; {len(failures)} on Faiss CPU because the GPU copy failed ({failures[0]})"
    return Placement(indexes, on_gpu, line)


def _set_nprobe(index: Any, nprobe: int) -> None:
    ivf = _faiss().try_extract_index_ivf(index)
    target = ivf if ivf is not None else index
    if hasattr(target, "nprobe"):
        target.nprobe = nprobe


@dataclass
class DenseIndex:
    """Every shard of one dense index, searched together; results merged exactly across shards."""

    index_dir: Path
    params: DenseParams
    shards: list[Any]
    on_gpu: list[bool] | None = None
    _store: EmbeddingStore | None = None
    torch_flat: TorchFlatSearch | None = None
    """Set when torch searches this flat index (``shards`` is then empty)."""
    refine_device: str | None = None
    """The torch device of IVF-PQ's exact refine (None: numpy on the CPU)."""
    manifest: Manifest | None = None
    """The index's manifest as the index was opened with it (None: read when needed)."""

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        device: str = "auto",
        engine: str = "auto",
        *,
        checked: bool = False,
        manifest: Manifest | None = None,
    ) -> DenseIndex:
        """Open a built index; says on one line which engine searches where, and why.

        ``device``: auto, cpu or cuda. ``engine``: auto (faiss-gpu where it sees a GPU, else torch on
        CUDA GPUs, else Faiss CPU), faiss, or torch (flat search and the exact refine; on the CPU with
        ``device="cpu"``). ``checked``: the caller already found the dense stage complete in the manifest
        it read. ``manifest``: that manifest, so it is not read again; ``params.json`` is read through the
        metadata reader, checked against what it recorded.
        """
        index_dir = Path(index_dir)
        manifest = manifest if manifest is not None else load_manifest(index_dir)
        if not checked and DENSE not in manifest.stages:
            require_record(index_dir, DENSE)  # the one line saying what is missing and how to build it
        params = StageFolder.locate(index_dir / DENSE_DIR, manifest).read(PARAMS_FILE, DenseParams)
        placement = _place(index_dir, params, device, engine)
        progress.say(placement.line)
        return cls(
            index_dir,
            params,
            placement.shards,
            placement.on_gpu,
            torch_flat=placement.torch_flat,
            refine_device=placement.refine_device,
            manifest=manifest,
        )

    @property
    def dim(self) -> int:
        return self.params.dim

    @property
    def store(self) -> EmbeddingStore:
        """The embedding chunks, opened on first use (only refine needs them)."""
        if self._store is None:
            self._store = EmbeddingStore.open(self.index_dir / EMBEDDINGS, self.manifest)
        return self._store

    def search(
        self, query_vectors: np.ndarray, k: int, nprobe: int | None = None, refine: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and inner-product scores per query (row -1, score -inf where fewer hits).

        ``nprobe`` and ``refine`` default to the tuned values; ``refine=R`` re-scores the top R PQ
        candidates exactly from the stored float16 vectors (0 turns it off; ignored by flat indexes).
        """
        queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise LyreError(
                f"query vectors have shape {queries.shape}; this dense index needs [n, {self.dim}]"
            )
        if k < 1:
            raise LyreError(f"k={k}: ask for at least one result")
        probes = nprobe if nprobe is not None else self.params.nprobe
        depth_refine = refine if refine is not None else self.params.refine
        if self.params.index_type == "flat":
            depth_refine = 0
        depth = max(k, depth_refine)
        if self.on_gpu and any(self.on_gpu) and max(depth, probes or 0) > faiss_params.GPU_MAX_K:
            raise LyreError(
                f"GPU Faiss allows at most {faiss_params.GPU_MAX_K} results and probes; lower k, "
                f"{opt('refine')} or {opt('nprobe')}, or search on the CPU (CUDA_VISIBLE_DEVICES=)"
            )
        if probes is not None:
            for index in self.shards:
                _set_nprobe(index, int(probes))
        rows_out = np.empty((len(queries), k), dtype=np.int64)
        scores_out = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            if self.torch_flat is not None:
                rows, scores = self.torch_flat.search(batch, depth)
            else:
                rows, scores = self._search_shards(batch, depth)
            if depth_refine:
                rows, scores = self._refine(batch, rows, k)
            else:
                rows, scores = rows[:, :k], scores[:, :k]
            rows_out[start : start + len(batch)] = rows
            scores_out[start : start + len(batch)] = scores
        return rows_out, scores_out

    def _search_shards(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``depth`` of every shard, merged. CPU IVF shards share one coarse quantizer, so the
        queries are assigned to lists once and every shard scans those lists (search_preassigned)
        instead of repeating the assignment per shard, which dominates at small nprobe."""
        ivfs = [_faiss().try_extract_index_ivf(index) for index in self.shards]
        if len(self.shards) > 1 and not any(self.on_gpu or []) and all(ivf is not None for ivf in ivfs):
            coarse_scores, lists = ivfs[0].quantizer.search(queries, ivfs[0].nprobe)
            found = [ivf.search_preassigned(queries, depth, lists, coarse_scores) for ivf in ivfs]
        else:
            found = [index.search(queries, depth) for index in self.shards]
        scores = np.concatenate([f[0] for f in found], axis=1)
        rows = np.concatenate([f[1] for f in found], axis=1)
        return top_k(rows, scores, depth)

    def _refine(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of the candidates from the stored vectors, then the best k of them
        (on ``refine_device`` with torch when set, else with numpy)."""
        if self.refine_device is not None:
            return top_k(rows, exact_scores(queries, rows, self.store.fetch, self.refine_device), k)
        exact = np.full(rows.shape, -np.inf, dtype=np.float32)
        step = max(1, REFINE_FETCH // rows.shape[1])
        for start in range(0, len(queries), step):
            block = rows[start : start + step]
            unique, inverse = np.unique(np.maximum(block, 0), return_inverse=True)
            candidates = self.store.fetch(unique)[inverse.reshape(block.shape)]
            scores = np.matmul(candidates, queries[start : start + step, :, None])[..., 0]
            exact[start : start + step] = np.where(block >= 0, scores, -np.inf)
        return top_k(rows, exact, k)
