"""The encode stage: docstore -> embedding chunks, resumable, sliceable over a job array, one worker per GPU.

A chunk is the unit of work and of restart: its rows are fixed by its number, its texts are batched only
among themselves, and it is written atomically with a completion record last. So a killed job rerun with the
same command skips the finished chunks and recomputes the rest exactly as an uninterrupted run would.
The manifest records the "embeddings" stage only once every chunk of every slice exists.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from lyre.basics import progress
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.options import option
from lyre.basics.progress import TokenProgress
from lyre.indexes.embeddings import STORE_FILE, EmbeddingStore, StoreSpec
from lyre.indexes.engines import ENGINES, EncodeJob, runner_for
from lyre.indexes.manifest import DOCSTORE, EMBEDDINGS
from lyre.indexes.query_encoder import model_identity
from lyre.indexes.stages import (
    Forget,
    StageRecord,
    StageResult,
    Upstream,
    need,
    overwrite_option,
    run_stage,
    stage_files,
)
from lyre.models.embedder import DEFAULT_MODEL
from lyre.models.recipes import DTYPES, POOLINGS, EmbedRecipe

DEFAULT_CHUNK_ROWS = 8192
EMBEDDINGS_DIR = EMBEDDINGS
RECIPE_OVERRIDES = ("pooling", "query_template", "query_instruction", "dtype")
"""Options that change the model folder's recipe; Ray workers take the recipe from the folder."""


@dataclass(frozen=True)
class EncodeOptions:
    """How documents become vectors, and who encodes them; shared by `lyre index` and `lyre encode`."""

    embed_model: str = option(DEFAULT_MODEL, "Hub id or local folder of the embedding model.")
    max_length: int | None = option(None, "Token limit per document (default: the recipe's).", minimum=1)
    dim: int | None = option(None, "Matryoshka: keep the first DIM dimensions.", minimum=1)
    pooling: str | None = option(None, "Override the recipe's pooling.", choices=POOLINGS)
    query_template: str | None = option(None, "Override, e.g. 'Instruct: {task}\\nQuery:{query}'.")
    query_instruction: str | None = option(None, "Override the task instruction given to queries.")
    dtype: str | None = option(
        None, "Override the recipe's dtype (auto: bf16 on CUDA, float32 on CPU).", choices=DTYPES
    )
    shard_id: int | None = option(
        None, "Encode only this slice (default: SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN).", minimum=0
    )
    num_shards: int | None = option(None, "Number of slices (default: SLURM_ARRAY_TASK_COUNT).", minimum=1)
    chunk_rows: int = option(
        DEFAULT_CHUNK_ROWS,
        "Documents per embedding chunk, the unit of resume (a started store keeps its own).",
        minimum=1,
    )
    token_budget: int | None = option(None, "Padded tokens per batch (default: by device).", minimum=1)
    engine: str = option(
        "local",
        "local (this process; one process per GPU when several are visible), gpus, or ray.",
        choices=ENGINES,
    )
    ray_address: str | None = option(None, "Ray cluster address (default: a local Ray).")
    ray_cpu_actors: int | None = option(None, "Ray actors on a cluster without GPUs.", minimum=1)
    device: str | None = option(
        None, "Device of the in-process encoder (default: CUDA when visible).", cli=False
    )
    overwrite: bool = overwrite_option()

    def recipe_overrides(self) -> dict[str, Any]:
        """The recipe fields these options set (None: the model folder's recipe decides)."""
        return {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "query_template": self.query_template,
            "query_task": self.query_instruction,
            "dtype": self.dtype,
        }


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
                "SLURM_ARRAY_TASK_* variables are not integers; "
                f"set {opt('shard_id')} and {opt('num_shards')}"
            ) from None
        if count < 1 or not 0 <= task - first < count:
            raise LyreError(
                f"SLURM_ARRAY_TASK_ID {task} (first {first}) is outside an array of {count} tasks; "
                f"set {opt('shard_id')} and {opt('num_shards')}"
            )
        return task - first, count
    if shard_id is None or num_shards is None:
        raise LyreError(f"set both {opt('shard_id')} and {opt('num_shards')} (or neither)")
    if not 0 <= shard_id < num_shards:
        raise OptionError("shard_id", shard_id, f"must be below {opt('num_shards')} ({num_shards})")
    return shard_id, num_shards


@dataclass(frozen=True)
class _Model:
    """What an encoding job is made of, resolved without loading weights."""

    folder: Path
    name: str
    recipe: EmbedRecipe
    dim: int

    def params(self, like: str | None = None) -> dict[str, Any]:
        """The record params: everything that decides the vectors. ``like``: the fingerprint of the record
        kept, whose scheme the model's fingerprint is made by (:func:`models.loading.model_fingerprint`)."""
        from lyre.models.loading import model_fingerprint

        return {
            "model": self.name,
            "model_fingerprint": model_fingerprint(self.folder, like=like),
            "recipe": self.recipe.to_dict(),
            "recipe_hash": self.recipe.hash(),
            "dim": self.dim,
        }


def _resolve(options: EncodeOptions) -> _Model:
    """Model folder, effective recipe and output dim, from the model's config files only."""
    from lyre.models.embedder import resolve_embedder

    folder, recipe, dim = resolve_embedder(
        options.embed_model,
        **{key: value for key, value in options.recipe_overrides().items()},
        dim=options.dim,
    )
    return _Model(folder, model_identity(options.embed_model, folder), replace(recipe, dim=dim), dim)


@dataclass
class EncodeStage:
    """Docstore -> embedding chunks (the "embeddings" stage)."""

    name: ClassVar[str] = EMBEDDINGS
    store: str = DOCSTORE
    """The store encoded: the docstore, or the passages of a passage index (``indexes/passage_stage.py``)."""
    _model: _Model | None = None
    _kept_fingerprint: str | None = None
    """The model fingerprint of the record this command may keep (found by :meth:`validate`): compared, and
    recorded again, by its own scheme, so an index recorded before tokenizer files were fingerprinted is
    neither refused as changed nor said to cover what it never checked."""

    def model(self, options: EncodeOptions) -> _Model:
        """The resolved model, once per command."""
        if self._model is None:
            self._model = _resolve(options)
        return self._model

    def params(self, options: EncodeOptions) -> dict[str, Any]:
        """The record params: the model's, and the store when it is not the docstore."""
        from lyre.indexes.passage_stage import store_params

        return {**self.model(options).params(like=self._kept_fingerprint), **store_params(self.store)}

    def validate(self, index_dir: Path, options: EncodeOptions, upstream: Upstream) -> None:
        slice_of_job(options.shard_id, options.num_shards)
        if options.engine == "ray":
            for name in RECIPE_OVERRIDES:
                if getattr(options, name) is not None:
                    raise OptionError(
                        name,
                        getattr(options, name),
                        "engine ray takes the recipe from the model folder; drop it",
                    )
        else:
            for name in ("ray_address", "ray_cpu_actors"):
                if getattr(options, name) is not None:
                    raise OptionError(name, getattr(options, name), f"applies only with {opt('engine')} ray")
        model = self.model(options)
        docstore = need(index_dir, upstream, self.store)
        recorded = upstream.get(EMBEDDINGS)
        kept = None if recorded is None or options.overwrite else recorded
        self._kept_fingerprint = kept.params.get("model_fingerprint") if kept is not None else None
        if options.overwrite or docstore is None:
            return  # the store is rebuilt from scratch either way
        if recorded is not None:
            changed = _differences(recorded.params, self.params(options))
            if not changed:
                _say_if_older_fingerprint(index_dir, recorded.params.get("model_fingerprint"))
        elif (index_dir / EMBEDDINGS / "store.json").exists():
            spec = EmbeddingStore.open(index_dir / EMBEDDINGS).spec
            from lyre.indexes.passage_stage import store_rows

            wanted = StoreSpec(
                store_rows(docstore), model.dim, spec.chunk_rows, model.name, model.recipe.to_dict()
            )
            changed = _differences(asdict(spec), asdict(wanted))
        else:
            return
        if changed:
            raise LyreError(
                f"{index_dir / EMBEDDINGS}: holds embeddings made with other settings "
                f"({', '.join(changed)}); use the same model and recipe to resume, "
                f"or set {opt('overwrite')} to encode again"
            )

    def is_current(self, index_dir: Path, record: StageRecord, options: EncodeOptions) -> bool:
        return not _differences(record.params, self.params(options))

    def discard_damaged(self, index_dir: Path, paths: list[str]) -> None:
        """Forget the chunks whose files are damaged, so the build re-encodes only those; a damaged
        ``store.json`` (the identity of every chunk) starts the store again."""
        directory = index_dir / EMBEDDINGS
        names = {Path(path).name for path in paths}
        if STORE_FILE in names:
            shutil.rmtree(directory, ignore_errors=True)
            return
        for name in names:
            chunk = name.split(".", 1)[0]  # chunk-000003 of chunk-000003.rows.npy
            for suffix in (".done.json", ".npy", ".rows.npy"):  # the completion record first
                (directory / f"{chunk}{suffix}").unlink(missing_ok=True)

    def build(self, index_dir: Path, options: EncodeOptions, forget: Forget) -> StageResult:
        from lyre.indexes.docstore import DocStore

        shard_id, num_shards = slice_of_job(options.shard_id, options.num_shards)
        model = self.model(options)
        docstore = DocStore.open(index_dir / self.store)
        directory = index_dir / EMBEDDINGS
        if options.overwrite and directory.exists():
            forget()
            shutil.rmtree(directory)
        chunk_rows = options.chunk_rows
        if (directory / "store.json").exists():
            chunk_rows = EmbeddingStore.open(directory).spec.chunk_rows
            if chunk_rows != options.chunk_rows:
                progress.say(
                    f"embeddings: resuming the store's {chunk_rows}-row chunks "
                    f"(overwrite to start again with {options.chunk_rows})"
                )
        spec = StoreSpec(len(docstore), model.dim, chunk_rows, model.name, model.recipe.to_dict())
        store = EmbeddingStore.create_or_resume(directory, spec)
        todo = store.missing_chunks(spec.chunks_of_slice(shard_id, num_shards))
        tracker = TokenProgress(
            sum(stop - start for start, stop in map(spec.chunk_bounds, todo)),
            f"encode {shard_id}/{num_shards}",
        )
        if todo:
            forget()  # new vectors: a dense index over the old ones is stale
            progress.say(
                f"encoding {len(todo)} chunks with {model.name} "
                f"(recipe {model.recipe.hash()}: {_describe(model.recipe)})"
            )
            _encode_missing(index_dir, model, todo, options, tracker, self.store)
        tracker.close()
        work = {
            "slice": [shard_id, num_shards],
            "encoded_chunks": len(todo),
            "documents": tracker.done_items,
            "tokens": tracker.done_tokens,
            "seconds": round(tracker.seconds, 3),
            "tokens_per_second": round(tracker.done_tokens / max(tracker.seconds, 1e-9), 1),
        }
        missing = store.missing_chunks()
        if missing:
            summary = (
                f"{EMBEDDINGS}: slice {shard_id}/{num_shards} done ({len(todo)} chunks encoded); "
                f"{len(missing)} of {spec.num_chunks} chunks of other slices are still missing "
                f"(first: {missing[0]})"
            )
            return StageResult(summary, None, work)
        from lyre.basics.provenance import provenance

        described = f"{spec.num_rows} documents x {model.dim} dims with {model.name}"
        record = StageRecord(
            summary=described,
            params=self.params(options),
            counts={"documents": spec.num_rows, "chunk_rows": chunk_rows, "num_chunks": spec.num_chunks},
            provenance=provenance("torch", "transformers", model=model.name, recipe_hash=model.recipe.hash()),
            files=stage_files(index_dir, EMBEDDINGS),
        )
        rate = f"{work['tokens_per_second']:,.0f} tokens/s"
        summary = f"{EMBEDDINGS}: {described} ({work['documents']} encoded now, {rate})"
        return StageResult(summary, record, work)


def _say_if_older_fingerprint(index_dir: Path, fingerprint: str | None) -> None:
    """An index recorded before tokenizer and pooling files were fingerprinted is still checked on its
    config and weights; say so, and how to record the rest."""
    from lyre.models.loading import FINGERPRINT_SCHEME

    if fingerprint is not None and not fingerprint.startswith(f"{FINGERPRINT_SCHEME}:"):
        progress.say(
            f"{index_dir / EMBEDDINGS}: recorded with a model fingerprint of config and weights only "
            "(older lyre); tokenizer and pooling files are not checked for it until it is encoded again "
            "(overwrite)"
        )


def _differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return sorted(key for key in {*recorded, *wanted} if recorded.get(key) != wanted.get(key))


def _encode_missing(
    index_dir: Path, model: _Model, todo: list[int], options: EncodeOptions, sink: TokenProgress, store: str
) -> None:
    """Who encodes the missing chunks: the engine the options name (see :mod:`indexes.engines`)."""
    runner = runner_for(
        options.engine,
        device=options.device,
        chunks=len(todo),
        ray_address=options.ray_address,
        ray_cpu_actors=options.ray_cpu_actors,
    )
    job = EncodeJob(index_dir, model.folder, model.recipe, tuple(todo), options.token_budget, store)
    runner.run(job, sink)


def _describe(recipe: EmbedRecipe) -> str:
    eos = ", EOS ensured" if recipe.ensure_eos else ""
    sides = f"{recipe.pooling} pooling, {recipe.padding_side} padding{eos}"
    return f"{recipe.name}, {sides}, max {recipe.max_length} tokens"


def encode_stage(
    index_dir: str | Path, options: EncodeOptions | None = None, *, wait: bool = False
) -> StageResult:
    """The "embeddings" stage alone, through the stage runner (``lyre encode``): under the write lock, or
    the shared slice lock for one slice of a job array, so the slices run together."""
    options = options or EncodeOptions()
    sliced = is_slice(options)
    return run_stage(Path(index_dir), EncodeStage(), options, wait=wait, sliced=sliced)


def is_slice(options: EncodeOptions) -> bool:
    """Whether these options encode one slice of several (given, or from a SLURM job array)."""
    return slice_of_job(options.shard_id, options.num_shards)[1] > 1
