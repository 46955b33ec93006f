"""Embedding recipes: everything besides the weights that decides what a vector means.

The same weights give useless vectors under the wrong pooling, padding side, EOS handling or prompt, and
nothing fails loudly. So the recipe is data: resolved once (built-in guess < the model folder's own
sentence-transformers files < the user's overrides), printed, saved in the index manifest with a hash, and
compared at search time so queries are encoded exactly like the documents were.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lyre.basics.errors import LyreError, opt

POOLINGS = ("last-token", "mean", "cls")
PADDING_SIDES = ("left", "right")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DECODER_TYPES = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "phi3")


@dataclass(frozen=True)
class EmbedRecipe:
    """How text becomes one vector. Templates have literal slots ``{task}``, ``{query}``, ``{document}``."""

    name: str
    pooling: str
    padding_side: str
    ensure_eos: bool
    eos_token: str | None
    query_template: str
    query_task: str | None
    document_template: str
    normalize: bool
    max_length: int
    dim: int | None = None
    dtype: str = "auto"

    def __post_init__(self) -> None:
        checks = (
            (self.pooling in POOLINGS, f"pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}"),
            (self.padding_side in PADDING_SIDES, f"padding side {self.padding_side!r}; use left or right"),
            (self.dtype in DTYPES, f"dtype {self.dtype!r}; use one of {', '.join(DTYPES)}"),
            (self.max_length >= 2, f"max length {self.max_length}; use at least 2"),
            (
                "{query}" in self.query_template,
                f"query template {self.query_template!r}; it needs a {{query}} slot",
            ),
            (
                "{document}" in self.document_template,
                f"document template {self.document_template!r}; it needs {{document}}",
            ),
            (self.dim is None or self.dim > 0, f"dim {self.dim}; use a positive size"),
        )
        for ok, problem in checks:
            if not ok:
                raise LyreError(f"unsupported {problem}")

    def format_query(self, query: str, task: str | None = None) -> str:
        """The query as the model sees it; ``task`` replaces the recipe's instruction for this call."""
        task = self.query_task if task is None else task
        template = self.query_template
        if "{task}" in template:
            if not task:
                raise LyreError(
                    "the query template has a {task} slot but no instruction; "
                    f"pass {opt('query_instruction')}"
                )
            template = template.replace("{task}", task)
        elif task and task != self.query_task:
            raise LyreError(
                f"query template {self.query_template!r} has no {{task}} slot for the instruction"
            )
        return template.replace("{query}", query)

    def format_document(self, document: str) -> str:
        return self.document_template.replace("{document}", document)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> EmbedRecipe:
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in known})

    def hash(self) -> str:
        """Stable identity of the recipe (canonical JSON, sorted keys), for manifests and resume checks."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


WEB_SEARCH_TASK = "Given a web search query, retrieve relevant passages that answer the query"

BUILTIN_RECIPES: dict[str, EmbedRecipe] = {
    # lychee-embed: final hidden state at the EOS that ends the input; instruction on queries only.
    "lychee-embed": EmbedRecipe(
        name="lychee-embed",
        pooling="last-token",
        padding_side="left",
        ensure_eos=True,
        eos_token="<|endoftext|>",
        query_template="Instruct: {task}\nQuery:{query}",
        query_task=WEB_SEARCH_TASK,
        document_template="{document}",
        normalize=True,
        max_length=8192,
    ),
    # BERT / MiniLM style: masked mean over token states, no prompts, the tokenizer adds [CLS]/[SEP].
    "mean": EmbedRecipe(
        name="mean",
        pooling="mean",
        padding_side="right",
        ensure_eos=False,
        eos_token=None,
        query_template="{query}",
        query_task=None,
        document_template="{document}",
        normalize=True,
        max_length=512,
    ),
}
# BERT style with the [CLS] state instead of the mean: the mean recipe with one field changed.
BUILTIN_RECIPES["cls"] = replace(BUILTIN_RECIPES["mean"], name="cls", pooling="cls")


def builtin_recipe(name: str) -> EmbedRecipe:
    if name not in BUILTIN_RECIPES:
        raise LyreError(f"unknown recipe {name!r}; built-in recipes: {', '.join(BUILTIN_RECIPES)}")
    return BUILTIN_RECIPES[name]


def guess_recipe(model_name: str, config: dict[str, Any]) -> EmbedRecipe:
    """The built-in recipe for a model's architecture: decoders pool at EOS, encoders take the mean."""
    if "lychee" in model_name.lower() or config.get("model_type") in DECODER_TYPES:
        return BUILTIN_RECIPES["lychee-embed"]
    return BUILTIN_RECIPES["mean"]


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LyreError(f"{path}: not valid JSON ({error.msg}); repair or delete the file") from None


_INSTRUCT_PROMPT = re.compile(r"\AInstruct: (?P<task>.+)\n(?P<lead>Query: ?)\Z", re.DOTALL)


def _query_prompt_fields(prompt: str) -> dict[str, Any]:
    """A stored query prompt as template + task, so ``--query-instruction`` can still swap the task."""
    match = _INSTRUCT_PROMPT.match(prompt)
    if match:
        return {
            "query_template": "Instruct: {task}\n" + match["lead"] + "{query}",
            "query_task": match["task"],
        }
    return {"query_template": prompt + "{query}", "query_task": None}


def sentence_transformers_fields(folder: Path) -> dict[str, Any]:
    """Recipe fields a sentence-transformers folder declares: pooling, normalisation, prompts, max length."""
    found: dict[str, Any] = {}
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list):
        types = {str(module.get("type", "")).rsplit(".", 1)[-1]: module for module in modules}
        found["normalize"] = "Normalize" in types
        pooling_module = types.get("Pooling")
        pooling = _read_json(folder / pooling_module["path"] / "config.json") if pooling_module else None
        if isinstance(pooling, dict):
            modes = {
                "pooling_mode_lasttoken": "last-token",
                "pooling_mode_mean_tokens": "mean",
                "pooling_mode_cls_token": "cls",
            }
            chosen = [recipe_mode for key, recipe_mode in modes.items() if pooling.get(key)]
            mode = pooling.get("pooling_mode")
            if mode in ("lasttoken", "mean", "cls"):
                chosen = ["last-token" if mode == "lasttoken" else mode]
            if len(chosen) == 1:
                found["pooling"] = chosen[0]
    st_config = _read_json(folder / "config_sentence_transformers.json")
    prompts = st_config.get("prompts", {}) if isinstance(st_config, dict) else {}
    if prompts.get("query"):
        found.update(_query_prompt_fields(prompts["query"]))
    document_prompt = next(
        (prompts[key] for key in ("document", "passage", "corpus") if prompts.get(key)), None
    )
    if document_prompt:
        found["document_template"] = document_prompt + "{document}"
    bert_config = _read_json(folder / "sentence_bert_config.json")
    if isinstance(bert_config, dict) and bert_config.get("max_seq_length"):
        found["max_length"] = int(bert_config["max_seq_length"])
    return found


def resolve_recipe(
    model_name: str,
    folder: Path | None,
    config: dict[str, Any],
    recipe: str | EmbedRecipe | None = None,
    **overrides: Any,
) -> EmbedRecipe:
    """The effective recipe: a named/explicit recipe or the built-in guess, then the folder's
    sentence-transformers files (only when no recipe was named), then the user's overrides (None = unset).

    A recipe the user names is taken as is: they chose it over what the folder says.
    """
    if isinstance(recipe, EmbedRecipe):
        base = recipe
    elif recipe is not None:
        base = builtin_recipe(recipe)
    else:
        base = guess_recipe(model_name, config)
        if folder is not None:
            base = replace(base, **sentence_transformers_fields(folder))
    unknown = set(overrides) - {field.name for field in fields(EmbedRecipe)}
    if unknown:
        raise LyreError(f"unknown recipe setting(s) {', '.join(sorted(unknown))}")
    base = replace(base, **{key: value for key, value in overrides.items() if value is not None})
    limit = config.get("max_position_embeddings")
    if limit and base.max_length > int(limit):
        base = replace(base, max_length=int(limit))
    return base
