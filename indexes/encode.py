"""The encode stage: docstore -> embedding chunks, resumable, sliceable over a job array, one worker per GPU.

A chunk is the unit of work and of restart: its rows are fixed by its number, its texts are batched only
among themselves, and it is written atomically with a completion record last. So a killed job rerun with the
same command skips the finished chunks and recomputes the rest exactly as an uninterrupted run would.
The manifest records the "embeddings" stage only once every chunk of every slice exists.
"""

from __future__ import annotations

import os
import queue
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from basics import progress
from basics.errors import LyreError
from formats.records import document_text
from indexes.embeddings import EmbeddingStore, StoreSpec
from indexes.manifest import invalidate, record_stage, require_stage, stage_record
from models.recipes import EmbedRecipe

DEFAULT_CHUNK_ROWS = 8192
#: Runs the missing chunks elsewhere (Ray): (index_dir, model folder, recipe, chunks, token budget, tracker).
ChunkRunner = Callable[[Path, str, EmbedRecipe, list[int], "int | None", Any], None]
EMBEDDINGS_DIR = "embeddings"


def slice_of_job(shard_id: int | None, num_shards: int | None) -> tuple[int, int]:
    """(shard_id, num_shards): as given, else from a SLURM job array (task id minus the array's first id),
    else the whole corpus (0, 1)."""
    if shard_id is None and num_shards is None:
        env = os.environ
        if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
            return 0, 1
        try:
            task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        except ValueError:
            raise LyreError(
                "SLURM_ARRAY_TASK_* variables are not integers; pass --shard-id and --num-shards"
            ) from None
        shard_id, num_shards = task - first, count
    if shard_id is None or num_shards is None:
        raise LyreError("pass both --shard-id and --num-shards (or neither)")
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise LyreError(f"--shard-id {shard_id} --num-shards {num_shards}: need 0 <= shard-id < num-shards")
    return shard_id, num_shards


class _Tracker:
    """Progress in documents with a token-based ETA: texts are length-sorted inside a chunk, so documents
    per second swing wildly while tokens per second stay steady. Tokens not yet tokenized are estimated
    from the mean length seen so far."""

    def __init__(self, total_docs: int, desc: str) -> None:
        self.total_docs = total_docs
        self.known_docs = self.known_tokens = self.done_docs = self.done_tokens = 0
        self.started = time.perf_counter()
        self.bar = progress.bar(
            total_docs,
            desc,
            unit="doc",
            bar_format="{desc}: {n_fmt}/{total_fmt} docs {bar} [{elapsed}{postfix}]",
        )

    def tokenized(self, docs: int, tokens: int) -> None:
        self.known_docs += docs
        self.known_tokens += tokens

    def advance(self, docs: int, tokens: int) -> None:
        self.done_docs += docs
        self.done_tokens += tokens
        rate = self.done_tokens / max(time.perf_counter() - self.started, 1e-9)
        mean = self.known_tokens / max(self.known_docs, 1)
        remaining = self.known_tokens - self.done_tokens + (self.total_docs - self.known_docs) * mean
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining / rate)) if rate > 0 else "?"
        self.bar.set_postfix_str(
            f"{self.done_tokens:,} tokens, {rate:,.0f} tokens/s, ETA {eta}", refresh=False
        )
        self.bar.update(docs)

    def close(self) -> None:
        self.bar.close()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def encode_chunk(embedder: Any, docstore: Any, store: EmbeddingStore, chunk: int, tracker: Any) -> None:
    """Encode and write one chunk (its texts batched only among themselves, so reruns are identical)."""
    start, stop = store.spec.chunk_bounds(chunk)
    texts = [
        embedder.recipe.format_document(document_text(doc))
        for _, docs in docstore.iter_batches(stop - start, start, stop)
        for doc in docs
    ]
    if len(texts) != stop - start:
        raise LyreError(
            f"docstore returned {len(texts)} documents for rows {start}..{stop}; rebuild it with `lyre index`"
        )
    ids = embedder.tokenize(texts)
    tokens = sum(len(sequence) for sequence in ids)
    tracker.tokenized(len(ids), tokens)
    began = time.perf_counter()
    vectors = embedder.encode_ids(ids, progress=tracker.advance)
    store.write_chunk(
        chunk,
        vectors.astype(np.float16),
        {"tokens": tokens, "seconds": round(time.perf_counter() - began, 3), "device": str(embedder.device)},
    )


def _gpu_worker(
    rank: int,
    index_dir: str,
    model: str,
    recipe: dict[str, Any],
    chunks: list[int],
    token_budget: int | None,
    messages: Any,
) -> None:
    """One GPU's share of the chunks, in a spawned process that reports progress through ``messages``."""
    from indexes.docstore import DocStore
    from models.embedder import Embedder

    class Relay:
        def tokenized(self, docs: int, tokens: int) -> None:
            messages.put(("tokenized", docs, tokens))

        def advance(self, docs: int, tokens: int) -> None:
            messages.put(("advance", docs, tokens))

    progress.set_quiet(True)
    embedder = Embedder.from_pretrained(
        model, recipe=EmbedRecipe.from_dict(recipe), device=f"cuda:{rank}", token_budget=token_budget
    )
    docstore = DocStore.open(Path(index_dir) / "docstore")
    store = EmbeddingStore.open(Path(index_dir) / EMBEDDINGS_DIR)
    for chunk in chunks:
        encode_chunk(embedder, docstore, store, chunk, Relay())
    messages.put(("finished", rank, 0))


def _run_on_gpus(
    index_dir: Path,
    model: str,
    recipe: EmbedRecipe,
    todo: list[int],
    token_budget: int | None,
    tracker: _Tracker,
) -> None:
    """Spread ``todo`` over one spawned worker per visible GPU (disjoint, interleaved chunk lists)."""
    import torch.multiprocessing as mp

    count = min(_visible_gpus(), len(todo))
    context = mp.get_context("spawn")
    messages = context.Queue()
    workers = [
        context.Process(
            target=_gpu_worker,
            args=(rank, str(index_dir), model, recipe.to_dict(), todo[rank::count], token_budget, messages),
        )
        for rank in range(count)
    ]
    for worker in workers:
        worker.start()
    finished = 0
    try:
        while finished < count:
            try:
                kind, first, second = messages.get(timeout=2.0)
            except queue.Empty:
                failed = [rank for rank, worker in enumerate(workers) if worker.exitcode not in (None, 0)]
                if failed:
                    raise LyreError(
                        f"encoding worker on cuda:{failed[0]} died "
                        f"(exit code {workers[failed[0]].exitcode}); "
                        "rerun the same command to resume from the finished chunks"
                    ) from None
                continue
            if kind == "tokenized":
                tracker.tokenized(first, second)
            elif kind == "advance":
                tracker.advance(first, second)
            else:
                finished += 1
    finally:
        for worker in workers:
            worker.join(timeout=None if finished == count else 0)
            if worker.is_alive():
                worker.terminate()


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def encode_stage(
    index_dir: str | Path,
    *,
    model: str = "vec-ai/lychee-embed",
    recipe: str | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    query_template: str | None = None,
    query_instruction: str | None = None,
    dtype: str | None = None,
    dim: int | None = None,
    device: str | None = None,
    shard_id: int | None = None,
    num_shards: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    token_budget: int | None = None,
    overwrite: bool = False,
    runner: ChunkRunner | None = None,
) -> dict[str, Any]:
    """Encode this job's slice of the docstore into ``INDEX/embeddings`` and, when every chunk of every
    slice is complete, record the "embeddings" stage. Returns a plain report (with a one-line ``summary``)."""
    from indexes.docstore import DocStore
    from models.embedder import Embedder, resolve_embedder
    from models.loading import model_fingerprint

    index_dir = Path(index_dir)
    require_stage(index_dir, "docstore")
    shard_id, num_shards = slice_of_job(shard_id, num_shards)
    if chunk_rows < 1:
        raise LyreError(f"--chunk-rows {chunk_rows}: use a positive number of rows")
    folder, effective, out_dim = resolve_embedder(
        model,
        recipe,
        pooling=pooling,
        max_length=max_length,
        query_template=query_template,
        query_task=query_instruction,
        dtype=dtype,
        dim=dim,
    )
    effective = replace(effective, dim=out_dim)
    docstore = DocStore.open(index_dir / "docstore")
    model_name = model_identity(model, folder)
    spec = StoreSpec(len(docstore), out_dim, chunk_rows, model_name, effective.to_dict())
    directory = index_dir / EMBEDDINGS_DIR
    if overwrite and directory.exists():
        invalidate(index_dir, "embeddings")
        shutil.rmtree(directory)
    store = EmbeddingStore.create_or_resume(directory, spec)
    todo = store.missing_chunks(spec.chunks_of_slice(shard_id, num_shards))
    total = sum(stop - start for start, stop in map(spec.chunk_bounds, todo))
    tracker = _Tracker(total, f"encode {shard_id}/{num_shards}")
    if todo:
        invalidate(index_dir, "embeddings")  # new vectors: a dense index over the old ones is stale
        progress.say(
            f"encoding {len(todo)} chunks with {model_name} "
            f"(recipe {effective.hash()}: {_describe(effective)})"
        )
        gpus = _visible_gpus() if device in (None, "auto", "cuda") else 0
        if runner is not None:
            runner(index_dir, str(folder), effective, todo, token_budget, tracker)
        elif gpus > 1 and len(todo) > 1:
            _run_on_gpus(index_dir, str(folder), effective, todo, token_budget, tracker)
        else:
            embedder = Embedder.from_pretrained(
                folder, recipe=effective, device=device, token_budget=token_budget
            )
            for chunk in todo:
                encode_chunk(embedder, docstore, store, chunk, tracker)
    tracker.close()
    missing = store.missing_chunks()
    report = {
        "model": model_name,
        "recipe": effective.to_dict(),
        "recipe_hash": effective.hash(),
        "dim": out_dim,
        "slice": [shard_id, num_shards],
        "encoded_chunks": len(todo),
        "documents": tracker.done_docs,
        "tokens": tracker.done_tokens,
        "seconds": round(tracker.seconds, 3),
        "tokens_per_second": round(tracker.done_tokens / max(tracker.seconds, 1e-9), 1),
        "missing_chunks": missing,
        "complete": not missing,
    }
    if missing:
        report["summary"] = (
            f"embeddings: slice {shard_id}/{num_shards} done ({len(todo)} chunks encoded); {len(missing)} of "
            f"{spec.num_chunks} chunks of other slices are still missing (first: {missing[0]})"
        )
        return report
    if todo or stage_record(index_dir, "embeddings") is None:
        from basics.provenance import provenance

        record_stage(
            index_dir,
            "embeddings",
            {
                "model": model_name,
                "model_fingerprint": model_fingerprint(folder),
                "recipe": effective.to_dict(),
                "recipe_hash": effective.hash(),
                "dim": out_dim,
                "num_rows": spec.num_rows,
                "chunk_rows": chunk_rows,
                "num_chunks": spec.num_chunks,
                "provenance": provenance(
                    "torch", "transformers", model=model_name, recipe_hash=effective.hash()
                ),
            },
        )
    report["summary"] = (
        f"embeddings: {spec.num_rows} documents x {out_dim} dims with {model_name} "
        f"({report['documents']} encoded now, {report['tokens_per_second']:,.0f} tokens/s)"
    )
    return report


def _describe(recipe: EmbedRecipe) -> str:
    eos = ", EOS ensured" if recipe.ensure_eos else ""
    sides = f"{recipe.pooling} pooling, {recipe.padding_side} padding{eos}"
    return f"{recipe.name}, {sides}, max {recipe.max_length} tokens"


def model_identity(model: str | Path, folder: Path) -> str:
    """How the manifest names the model: the hub id as given, or the absolute folder."""
    return str(folder) if Path(str(model)).expanduser().is_dir() else str(model)


def load_index_embedder(
    index_dir: str | Path, *, model: str | None = None, device: str | None = None, **overrides: Any
) -> Any:
    """The embedder that encoded ``index_dir``, with the recorded recipe, for encoding its queries.

    ``model`` may point at another copy of the same model (same fingerprint: config and weight files);
    recipe ``overrides`` (pooling, max_length, query_template, query_task, ...) must not change the recipe,
    because query vectors made differently from the document vectors silently ruin retrieval."""
    from models.embedder import Embedder
    from models.loading import model_fingerprint, resolve_model

    index_dir = Path(index_dir)
    record = require_stage(index_dir, "embeddings", how="lyre encode")
    recorded = EmbedRecipe.from_dict(record["recipe"])
    wanted = replace(recorded, **{key: value for key, value in overrides.items() if value is not None})
    if wanted.hash() != recorded.hash():
        changed = sorted(key for key, value in wanted.to_dict().items() if recorded.to_dict()[key] != value)
        raise LyreError(
            f"{index_dir}: was encoded with recipe {recorded.hash()}; "
            f"your settings change {', '.join(changed)}; "
            "search with the index's recipe or rebuild the index with `lyre encode --overwrite`"
        )
    source = model or record["model"]
    folder = resolve_model(source)
    same_name = model is None or model_identity(model, folder) == record["model"]
    if not same_name and model_fingerprint(folder) != record.get("model_fingerprint"):
        raise LyreError(
            f"{index_dir}: was encoded with {record['model']}, not {model}; search with --embed-model "
            f"{record['model']} or rebuild the index with `lyre encode --overwrite`"
        )
    return Embedder.from_pretrained(folder, recipe=recorded, device=device)
