"""Fixtures shared by the test modules: tiny Qwen2 model folders, the `lyre` command line as a user runs
it, and the shared BEIR collections (helpers the tests import by name are in ``helpers.py``).

The shared data lies next to the repository (``<repo>/../shared/data``), never inside it; ``LYRE_DATA``
points elsewhere. A test that needs a collection skips, naming the folder it looked in, only when the
collection is absent from the default place; when ``LYRE_DATA`` was set on purpose and the collection is
missing there, the test fails instead, so a mistyped path never turns a run into silent skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from embed_fixtures import build_tiny_qwen
from helpers import DATA_VARIABLE, SAMPLE, LyreCli, shared_data_root


@pytest.fixture(scope="session")
def lyre() -> LyreCli:
    return LyreCli()


@pytest.fixture(scope="session")
def sample() -> Path:
    """The 120-document sample shipped in the repository (corpus, queries, qrels)."""
    return SAMPLE


@pytest.fixture(scope="session")
def shared_collection() -> Callable[[str], Path]:
    """``shared_collection("scifact")``: the folder of a shared BEIR collection, or a skip saying where
    it was looked for (a failure when ``LYRE_DATA`` names a folder without it)."""

    def locate(name: str) -> Path:
        folder = shared_data_root() / name
        if (folder / "corpus.jsonl").is_file():
            return folder
        where = f"{folder} (no corpus.jsonl)"
        if DATA_VARIABLE in os.environ:
            pytest.fail(f"{DATA_VARIABLE} is set but the shared BEIR collection {name!r} is not at {where}")
        pytest.skip(
            f"shared BEIR collection {name!r} not found at {where}; set {DATA_VARIABLE} to its parent"
        )

    return locate


@pytest.fixture(scope="session")
def scifact(shared_collection: Callable[[str], Path]) -> Path:
    return shared_collection("scifact")


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen2 embedding model (lychee-embed's shape, hidden 64) with the real Qwen
    tokenizer, built once per session; tests only read it."""
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def qwen_reranker_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a language-model head (lychee-rerank's yes/no shape). Large initial weights
    spread p(yes) far from 0.5, so a mismatch between two scoring paths shows."""
    folder = tmp_path_factory.mktemp("tiny-qwen2-reranker")
    return build_tiny_qwen(folder, causal_lm=True, initializer_range=0.5)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (real MiniLM tokenizer): an embedding model that encodes the sample in a blink."""
    from scale_fixtures import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def corpus70(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 generated documents: five chunks of 16 rows, the last one short."""
    from scale_fixtures import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", documents=70)
