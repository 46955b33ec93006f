"""Query encoding at search time: the embedder that made an index's vectors, with the recorded recipe.

It lives apart from the encode stage because searching never builds anything: the query side needs the
recorded model and recipe of the "embeddings" stage and nothing of the stage's machinery.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError
from lyre.indexes.manifest import DOCSTORE, EMBEDDINGS, REENCODE, require_stage, stage_record
from lyre.models.embedder import Embedder
from lyre.models.loading import MissingModelError, model_fingerprint, resolve_model
from lyre.models.recipes import EmbedRecipe


def model_identity(model: str | Path, folder: Path) -> str:
    """How the manifest names the model: the hub id as given, or the absolute folder."""
    return str(folder) if Path(str(model)).expanduser().is_dir() else str(model)


def load_index_embedder(
    index_dir: str | Path,
    *,
    model: str | None = None,
    device: str | None = None,
    embeddings: dict[str, Any] | None = None,
    **overrides: Any,
) -> Embedder:
    """The embedder that encoded ``index_dir``, with the recorded recipe, for encoding its queries
    (found and checked by :func:`checked_model_folder`, whose arguments these are)."""
    folder, recipe = checked_model_folder(index_dir, model=model, embeddings=embeddings, **overrides)
    return Embedder.from_pretrained(folder, recipe=recipe, device=device)


def checked_model_folder(
    index_dir: str | Path,
    *,
    model: str | None = None,
    embeddings: dict[str, Any] | None = None,
    resolved: Path | None = None,
    **overrides: Any,
) -> tuple[Path, EmbedRecipe]:
    """The folder of the model that encoded ``index_dir`` and its recorded recipe, without loading it.

    The model folder's fingerprint (weights, config, tokenizer and pooling files:
    :func:`models.loading.model_fingerprint`, by the scheme of the recorded one) is compared with the
    recorded one on every call, whatever the model is called: a tokenizer or weights replaced in the folder
    the index was built with are refused, and ``model`` may point at another copy of the same model (same
    fingerprint). Recipe ``overrides`` (pooling, max_length, query_template, query_task, ...) must not
    change the recipe, because query vectors made differently from the document vectors silently ruin
    retrieval.
    ``embeddings``: the embeddings stage's record when the caller has read the manifest already.
    ``resolved``: where an earlier call found the model (finding a hub id in the Hugging Face cache
    imports huggingface_hub: 0.16 s, more than a cached search); used while it still holds a model."""
    index_dir = Path(index_dir)
    record = (embeddings or require_stage(index_dir, EMBEDDINGS))["params"]
    recorded = EmbedRecipe.from_dict(record["recipe"])
    wanted = replace(recorded, **{key: value for key, value in overrides.items() if value is not None})
    if wanted.hash() != recorded.hash():
        changed = sorted(key for key, value in wanted.to_dict().items() if recorded.to_dict()[key] != value)
        raise LyreError(
            f"{index_dir}: was encoded with recipe {recorded.hash()}; "
            f"your settings change {', '.join(changed)}; "
            f"search with the index's recipe or encode the index again with `{_reencode(index_dir, 'MODEL')}`"
        )
    source = model or record["model"]
    try:
        folder = resolved if resolved is not None and (resolved / "config.json").is_file() else None
        folder = folder or resolve_model(source)
    except MissingModelError as error:
        # Searching has no model option: say where the index expects its model, not how to pass one.
        raise LyreError(
            f"{index_dir}: its documents were encoded with {source}, which cannot be loaded here "
            f"({error.reason}); put that model back where it was (for a hub id, in the Hugging Face "
            f"cache), or encode the index again with `{_reencode(index_dir, 'MODEL')}`"
        ) from None
    found = model_fingerprint(folder, like=record.get("model_fingerprint"))
    if found != record.get("model_fingerprint"):
        raise model_changed_error(index_dir, record, folder, found, model)
    return folder, recorded


def model_changed_error(
    index_dir: Path, record: dict[str, Any], folder: Path, found: str, asked: str | None = None
) -> LyreError:
    """The model found for the queries is not the one that encoded the documents (its weights, config,
    tokenizer or pooling files differ from the recorded fingerprint): query and document vectors would
    silently disagree."""
    rebuild = _reencode(index_dir, folder)
    if asked is not None and model_identity(asked, folder) != record["model"]:
        return LyreError(
            f"{index_dir}: was encoded with {record['model']}, not {asked} ({folder} holds other weights, "
            f"config, tokenizer or pooling files); search with that model, or re-encode with `{rebuild}`"
        )
    return LyreError(
        f"{folder}: the model's files (weights, config, tokenizer or pooling) changed since {index_dir} was "
        f"encoded with it (fingerprint {found}, recorded {record.get('model_fingerprint')}); "
        f"put them back as they were, or re-encode with `{rebuild}`"
    )


def _reencode(index_dir: Path, model: str | Path) -> str:
    """The command that encodes ``index_dir`` again with ``model``, from the corpus it was built from."""
    docstore = stage_record(index_dir, DOCSTORE) or {}
    corpus = docstore.get("params", {}).get("corpus", "CORPUS")
    return REENCODE.format(corpus=corpus, index=index_dir, model=model)
