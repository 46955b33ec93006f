"""Building the Faiss shards of a dense index from the embedding chunk store: train IVF-PQ once, add each
shard's rows to a copy of the trained index, write it atomically.

Shards are written atomically and skipped when already present, so an interrupted build resumes; a build
with other settings (``build.json``) or a new quantizer (``trained.faiss``) starts the shards again, since
shards made with other settings or quantizers must never be merged.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics import progress
from lyre.basics.atomic import atomic_path, write_json_atomic
from lyre.basics.errors import LyreError, opt
from lyre.basics.numbers import count, size
from lyre.basics.resources import ResourceError, ensure_free_space, free_bytes, on_disk
from lyre.indexes import faiss_params
from lyre.indexes.dense_files import (
    BUILD_FILE,
    TRAINED_FILE,
    DenseBuild,
    DenseShard,
    faiss_module,
    shard_name,
)
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.manifest import EMBEDDINGS, StageFolder
from lyre.indexes.metadata import MetadataError

ADD_BATCH = 65_536
"""Vectors converted to float32 and added to Faiss at a time (bounds memory independently of chunk size)."""
PQ_TRAIN_ITERATIONS = 10
"""k-means iterations per PQ sub-quantizer (Faiss default 25): low-dimensional sub-vectors converge early,
and at 96 sub-quantizers the iterations dominate training time (66 s -> 20 s on 65k x 384-d)."""
FAISS_HEADER_BYTES = 4096
"""What a Faiss index file holds besides its vectors, ids, centroids and codebooks (under 200 B measured)."""


def complete_store(index_dir: Path) -> EmbeddingStore:
    """The embedding store of ``index_dir``, refused unless every chunk is there."""
    store = EmbeddingStore.open(index_dir / EMBEDDINGS)
    missing = store.missing_chunks()
    if missing:
        raise LyreError(
            f"{store.directory}: {count(len(missing))} of {count(store.spec.num_chunks, 'embedding chunks')} "
            f"are missing (first: {missing[0]}); finish every {opt('slice_id')} slice of the encoding, "
            "then build again"
        )
    return store


def shard_layout(num_rows: int, shard_rows: int) -> tuple[DenseShard, ...]:
    """The shards of ``num_rows`` vectors, ``shard_rows`` each (the last one shorter)."""
    return tuple(
        DenseShard(shard_name(s), (start, min(start + shard_rows, num_rows)))
        for s, start in enumerate(range(0, num_rows, shard_rows))
    )


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


def prepare_dir(dense_dir: Path, build: DenseBuild, overwrite: bool) -> None:
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


def train(dense_dir: Path, store: EmbeddingStore, shape: faiss_params.IvfPqParams, seed: int) -> Any:
    """The trained empty IVF-PQ index: loaded when present, else trained on a seeded sample and saved.

    A newly trained index invalidates every shard file, since shards must share its quantizer.
    """
    faiss = faiss_module()
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
            f"dense: PQ codebooks trained on {count(shape.train_sample, 'vectors')} "
            f"(Faiss advises >= {count(codebook_points)}); recall is tuned and recorded below"
        )
        ivf.pq.cp.min_points_per_centroid = 1  # our line above replaces Faiss's repeated warning
    progress.say(f"dense: training {shape.factory} on {count(shape.train_sample, 'vectors')}")
    index.train(sample)
    _write_index(index, path, _trained_bytes(shape.nlist, spec.dim, shape.nbits))
    return index


def _write_index(index: Any, path: Path, expected_bytes: int) -> None:
    """Save a Faiss index atomically. Faiss reports a failed write (a full disk, a quota, a file-size
    limit) as a RuntimeError with a C++ trace: free space is checked first, and a failure is one line
    naming the file."""
    faiss = faiss_module()
    ensure_free_space(path.parent, expected_bytes)
    try:
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
    except RuntimeError as error:
        reason = next((line.strip() for line in reversed(str(error).splitlines()) if line.strip()), "")
        raise ResourceError(
            f"{path}: Faiss could not write it ({reason[:200]}; {size(free_bytes(path.parent))} "
            f"free in {path.parent}); free space there, or choose another {opt('out')}"
        ) from None


def build_shard(path: Path, store: EmbeddingStore, template: Any, rows: tuple[int, int], bar: Any) -> None:
    """Add ``rows`` [start, stop) with their global ids to a copy of ``template`` (None: an exact flat
    index) and save it atomically."""
    faiss = faiss_module()
    if template is None:
        index = faiss.IndexIDMap(faiss.IndexFlatIP(store.spec.dim))
    else:
        index = faiss.clone_index(template)
    start, stop = rows
    for row_ids, vectors in _iter_rows(store, start, stop):
        index.add_with_ids(vectors, row_ids)
        bar.update(len(row_ids))
    _write_index(index, path, _shard_bytes(index, store.spec.dim, stop - start))


def _trained_bytes(nlist: int, dim: int, nbits: int) -> int:
    """What a trained, empty IVF-PQ index takes on disk: float32 coarse centroids and PQ codebooks
    (2^nbits centroids of every sub-vector: as many floats as 2^nbits vectors), and the headers."""
    return on_disk(nlist * dim * 4 + (1 << nbits) * dim * 4 + FAISS_HEADER_BYTES)


def _shard_bytes(index: Any, dim: int, rows: int) -> int:
    """What a shard file will take on disk: each vector's code (float32 values for flat, PQ bytes for
    IVF-PQ) and its 64-bit id; for IVF-PQ also the trained quantizers and each list's length (measured:
    within 200 bytes of the file Faiss writes, SciFact's 5,183 x 384 flat and IVF64,PQ96 shards)."""
    faiss = faiss_module()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return on_disk(rows * (dim * 4 + 8) + FAISS_HEADER_BYTES)
    nbits = faiss.downcast_index(ivf).pq.nbits
    return on_disk(rows * (ivf.code_size + 8) + ivf.nlist * 8) + _trained_bytes(ivf.nlist, dim, nbits)


def build_shards(
    dense_dir: Path, store: EmbeddingStore, shards: tuple[DenseShard, ...], template: Any
) -> None:
    """Every shard file not yet in ``dense_dir`` (an interrupted build resumes), with one progress bar."""
    todo = [shard for shard in shards if not (dense_dir / shard.file).exists()]
    if len(todo) < len(shards):
        built = count(len(shards) - len(todo))
        progress.say(f"dense: {built} of {count(len(shards), 'shards')} already built; resuming")
    vectors = sum(stop - start for start, stop in (shard.rows for shard in todo))
    with progress.bar(vectors, desc="dense add", unit="vector") as bar:
        for shard in todo:
            build_shard(dense_dir / shard.file, store, template, shard.rows, bar)
