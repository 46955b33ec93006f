"""Model identity (issue 18, class 6): a tokenizer or pooling file changed in the embedding model's folder.

Query vectors made with another tokenizer or pooling than the document vectors silently ruin a ranking, as
replaced weights do; so the model's fingerprint covers those files too (``models.loading``). Rerunning
``lyre index`` refuses to resume (one line: encode again with ``--overwrite``) instead of saying "up to
date"; ``lyre search`` refuses with the line it gives for replaced weights, with or without the cache; once
the file is put back, both work again. An index recorded by the older scheme (config and weights only) is
compared by that scheme. On the sample with a copy of the tiny BERT (real MiniLM tokenizer).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import SAMPLE, LyreCli, one_line_error
from lyre.basics.errors import LyreError
from lyre.indexes.manifest import EMBEDDINGS, complete_records, read_manifest
from lyre.indexes.query_encoder import checked_model_folder
from lyre.models.loading import model_fingerprint

pytest.importorskip("faiss")

CORPUS = SAMPLE / "corpus.jsonl"
SWAPPED = ("the", "of")
"""Two frequent tokens whose ids are swapped: most of the sample's texts tokenize differently."""


def swap_in_tokenizer_json(path: Path) -> None:
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    vocabulary = tokenizer["model"]["vocab"]
    first, second = SWAPPED
    vocabulary[first], vocabulary[second] = vocabulary[second], vocabulary[first]
    path.write_text(json.dumps(tokenizer), encoding="utf-8")


def swap_in_vocab_txt(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    first, second = (lines.index(token) for token in SWAPPED)
    lines[first], lines[second] = lines[second], lines[first]
    path.write_text("\n".join(lines), encoding="utf-8")


def cls_pooling(path: Path) -> None:
    pooling = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(
        json.dumps({**pooling, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    )


CHANGES: dict[str, Callable[[Path], None]] = {
    "tokenizer.json": swap_in_tokenizer_json,
    "vocab.txt": swap_in_vocab_txt,
    "1_Pooling/config.json": cls_pooling,
}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, lyre: LyreCli) -> tuple[Path, Path]:
    """(model folder, index): a copy of the tiny BERT and a dense index of the sample made with it, whose
    query lists are cached by a first search."""
    root = tmp_path_factory.mktemp("identity")
    folder = root / "model"
    shutil.copytree(tiny_bert, folder)
    index = root / "index"
    lyre("-q", "index", CORPUS, "--out", index, "--embed-model", folder)
    lyre("-q", *search_args(index, root / "filled.run"))
    return folder, index


def search_args(index: Path, out: Path) -> list[str | Path]:
    return [
        "search", "--index", index, "--queries", SAMPLE / "queries.tsv", "--mode", "dense",
        "--rerank-depth", "0", "--k", "10", "--out", out,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("changed", CHANGES)
def test_a_changed_tokenizer_or_pooling_file_is_refused_by_index_and_search(
    encoded: tuple[Path, Path], changed: str, lyre: LyreCli, tmp_path: Path
) -> None:
    folder, index = encoded
    path = folder / changed
    original = path.read_bytes()
    manifest = (index / "manifest.json").read_bytes()
    CHANGES[changed](path)
    try:
        refused = lyre("-q", "index", CORPUS, "--out", index, "--embed-model", folder, check=False)
        line = one_line_error(
            refused,
            f"error: {index / EMBEDDINGS}: holds embeddings made with other settings (",
            "--overwrite",
        )
        assert "model_fingerprint" in line
        assert (index / "manifest.json").read_bytes() == manifest

        cached = lyre("-q", *search_args(index, tmp_path / "cached.run"), check=False)
        uncached = lyre("-q", *search_args(index, tmp_path / "uncached.run"), "--no-cache", check=False)
        changed_line = f"error: {folder}: the model's files (weights, config, tokenizer or pooling) changed"
        assert one_line_error(cached, changed_line) == one_line_error(uncached)
        assert not (tmp_path / "cached.run").exists() and not (tmp_path / "uncached.run").exists()
    finally:
        path.write_bytes(original)
    rerun = lyre("-q", "index", CORPUS, "--out", index, "--embed-model", folder)
    assert f"{EMBEDDINGS}: up to date" in rerun.stdout
    lyre("-q", *search_args(index, tmp_path / "restored.run"))
    assert (tmp_path / "restored.run").read_bytes() == (index.parent / "filled.run").read_bytes()


def test_an_index_recorded_by_the_older_scheme_is_checked_on_config_and_weights(
    encoded: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, index = encoded
    record = complete_records(read_manifest(index))[EMBEDDINGS]
    older = {
        **record,
        "params": {**record["params"], "model_fingerprint": model_fingerprint(folder, like="0")},
    }
    assert checked_model_folder(index, embeddings=older)[0] == folder.resolve()

    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.5}))
    with pytest.raises(LyreError, match=f"not {copy} \\({copy} holds other weights, config, tokenizer"):
        checked_model_folder(index, model=str(copy), embeddings=older)
