"""The encode stage: docstore -> embedding chunks, resumable, sliceable over a job array, one worker per GPU.

A chunk is the unit of work and of restart: its rows are fixed by its number, its texts are batched only
among themselves, and it is written atomically with a completion record last. So a killed job rerun with the
same command skips the finished chunks and recomputes the rest exactly as an uninterrupted run would.
The manifest records the "embeddings" stage only once every chunk of every slice exists.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from lyre.basics import progress
from lyre.basics.declared import option
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.numbers import count, rate
from lyre.basics.progress import TokenProgress
from lyre.basics.provenance import provenance
from lyre.indexes.docstore import DocStore
from lyre.indexes.embeddings import STORE_FILE, EmbeddingStore, StoreSpec
from lyre.indexes.encode_job import EncodeJob
from lyre.indexes.encode_runners import runner_for
from lyre.indexes.manifest import DOCSTORE, EMBEDDINGS
from lyre.indexes.metadata import StageRecord
from lyre.indexes.query_encoder import model_identity
from lyre.indexes.source_store import store_params, store_rows
from lyre.indexes.stages import (
    Invalidate,
    StageResult,
    Upstream,
    overwrite_option,
    required_upstream,
    run_stage,
    stage_files,
)
from lyre.models.embedder import DEFAULT_MODEL, resolve_embedder
from lyre.models.engines import ENGINES
from lyre.models.loading import FINGERPRINT_SCHEME, model_fingerprint
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
    slice_id: int | None = option(
        None,
        "Encode only this slice of the chunks (default: SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN).",
        minimum=0,
    )
    slices: int | None = option(
        None,
        "Slices the chunks are split into, one per job-array task (default: SLURM_ARRAY_TASK_COUNT).",
        minimum=1,
    )
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


def slice_of_job(slice_id: int | None, slices: int | None) -> tuple[int, int]:
    """(slice_id, slices): as given, else from a SLURM job array (task id minus the array's first id),
    else the whole corpus (0, 1)."""
    if slice_id is None and slices is None:
        env = os.environ
        if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
            return 0, 1
        try:
            task, tasks = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        except ValueError:
            raise LyreError(
                f"SLURM_ARRAY_TASK_* variables are not integers; set {opt('slice_id')} and {opt('slices')}"
            ) from None
        if tasks < 1 or not 0 <= task - first < tasks:
            raise LyreError(
                f"SLURM_ARRAY_TASK_ID {task} (first {first}) is outside an array of {count(tasks, 'tasks')}; "
                f"set {opt('slice_id')} and {opt('slices')}"
            )
        return task - first, tasks
    if slice_id is None or slices is None:
        raise LyreError(f"set both {opt('slice_id')} and {opt('slices')} (or neither)")
    if not 0 <= slice_id < slices:
        raise OptionError("slice_id", slice_id, f"must be below {opt('slices')} ({slices})")
    return slice_id, slices


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
        return {
            "model": self.name,
            "model_fingerprint": model_fingerprint(self.folder, like=like),
            "recipe": self.recipe.to_dict(),
            "recipe_hash": self.recipe.hash(),
            "dim": self.dim,
        }


def _resolve(options: EncodeOptions) -> _Model:
    """Model folder, effective recipe and output dim, from the model's config files only."""
    folder, recipe, dim = resolve_embedder(options.embed_model, **options.recipe_overrides(), dim=options.dim)
    return _Model(folder, model_identity(options.embed_model, folder), recipe, dim)


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
        return {**self.model(options).params(like=self._kept_fingerprint), **store_params(self.store)}

    def validate(self, index_dir: Path, options: EncodeOptions, upstream: Upstream) -> None:
        slice_of_job(options.slice_id, options.slices)
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
        docstore = required_upstream(index_dir, upstream, self.store)
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

    def build(self, index_dir: Path, options: EncodeOptions, invalidate: Invalidate) -> StageResult:
        slice_id, slices = slice_of_job(options.slice_id, options.slices)
        model = self.model(options)
        docstore = DocStore.open(index_dir / self.store)
        directory = index_dir / EMBEDDINGS
        if options.overwrite and directory.exists():
            invalidate()
            shutil.rmtree(directory)
        chunk_rows = options.chunk_rows
        if (directory / "store.json").exists():
            chunk_rows = EmbeddingStore.open(directory).spec.chunk_rows
            if chunk_rows != options.chunk_rows:
                progress.say(
                    f"embeddings: resuming the store's chunks of {count(chunk_rows, 'rows')} "
                    f"(overwrite to start again with {count(options.chunk_rows)})"
                )
        spec = StoreSpec(len(docstore), model.dim, chunk_rows, model.name, model.recipe.to_dict())
        store = EmbeddingStore.create_or_resume(directory, spec)
        todo = store.missing_chunks(spec.chunks_of_slice(slice_id, slices))
        tracker = TokenProgress(
            sum(stop - start for start, stop in map(spec.chunk_bounds, todo)),
            f"encode {slice_id}/{slices}",
            unit="doc" if self.store == DOCSTORE else "passage",
        )
        if todo:
            invalidate()  # new vectors: a dense index over the old ones is stale
            progress.say(
                f"encoding {count(len(todo), 'chunks')} with {model.name} "
                f"(recipe {model.recipe.hash()}: {_describe(model.recipe)})"
            )
            _encode_missing(index_dir, model, todo, options, tracker, self.store)
        tracker.close()
        work: dict[str, Any] = {
            "slice": [slice_id, slices],
            "encoded_chunks": len(todo),
            "documents": tracker.done_items,
            "tokens": tracker.done_tokens,
            "seconds": round(tracker.seconds, 3),
            "tokens_per_second": round(tracker.done_tokens / max(tracker.seconds, 1e-9), 1),
        }
        missing = store.missing_chunks()
        if missing:
            summary = (
                f"{EMBEDDINGS}: slice {slice_id}/{slices} done ({count(len(todo), 'chunks')} encoded); "
                f"{count(len(missing))} of {count(spec.num_chunks, 'chunks')} of other slices are still "
                f"missing (first: {missing[0]})"
            )
            return StageResult(summary, None, work)
        rows = "documents" if self.store == DOCSTORE else self.store
        described = f"{count(spec.num_rows, rows)} x {count(model.dim, 'dims')} with {model.name}"
        record = StageRecord(
            summary=described,
            params=self.params(options),
            counts={"documents": spec.num_rows, "chunk_rows": chunk_rows, "num_chunks": spec.num_chunks},
            provenance=provenance("torch", "transformers", model=model.name, recipe_hash=model.recipe.hash()),
            files=stage_files(index_dir, EMBEDDINGS),
        )
        speed = rate(work["tokens_per_second"], "tokens")
        summary = f"{EMBEDDINGS}: {described} ({count(tracker.done_items)} encoded now, {speed})"
        return StageResult(summary, record, work)


def _say_if_older_fingerprint(index_dir: Path, fingerprint: str | None) -> None:
    """An index recorded before tokenizer and pooling files were fingerprinted is still checked on its
    config and weights; say so, and how to record the rest."""
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
    """Who encodes the missing chunks: the engine the options name (see :mod:`indexes.encode_runners`)."""
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
    return f"{recipe.name}, {sides}, max {count(recipe.max_length, 'tokens')}"


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
    return slice_of_job(options.slice_id, options.slices)[1] > 1
