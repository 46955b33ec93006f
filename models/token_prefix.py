"""Token-exact text prefixes: the part of a huge text that can reach the model, cut without changing a token.

Tokenizing a whole 5 MB text to keep its first 512 tokens costs ~10 s and ~600 MB (a 5 MB CJK text ~50 s
and 2.7 GB), so long texts are cut first. A cut by a characters-per-token guess is wrong for the texts that
matter most here: a 10,000-character "word" followed by prose reads as one ``[UNK]`` instead of 256 tokens.
This module cuts only where the tokenizer provably splits the same way with or without what follows.

**Safe cuts.** A Hugging Face fast tokenizer splits added tokens out of the raw text, normalizes the rest,
pre-tokenizes it into pieces and runs the model (WordPiece, BPE) on each piece alone. Call position ``c``
of a text ``T`` a *safe cut* when (1) no added token occurrence spans ``c``, (2) normalization maps
``T[:c]`` and ``T[c:]`` independently (``T[c]`` is a starter that composes with nothing before it), and
(3) the pre-tokenizer puts a boundary at ``c`` in ``T`` and splits ``T[:c]`` into exactly the pieces of
``T`` before ``c``. Then the tokens of ``T[:c]`` are the first tokens of ``T``, with the same character
offsets, because every piece is tokenized alone. Which positions are safe is proved per tokenizer family
(:class:`CutRule`); a tokenizer of any other family is never cut, which is exact and only slower.

- BERT (``BertNormalizer`` + ``BertPreTokenizer`` + WordPiece, e.g. MiniLM): the pre-tokenizer splits at
  every whitespace character and isolates every punctuation character, and the normalizer puts spaces
  around every CJK ideograph; all its steps (cleaning, lower-casing, accent stripping) act per character.
  So a cut is safe before a space, and before or after an ASCII punctuation character, a CJK ideograph
  or CJK punctuation, whatever lies on the other side.
- Byte-level BPE with the GPT-4/Qwen2 split expression (``NFC`` + ``Split`` + ``ByteLevel`` + BPE, e.g.
  Qwen): a letter run ``\\p{L}+`` ends only at a non-letter, and no alternative of the expression
  extends a piece from a letter across a space, a digit or punctuation (contractions such as ``'s`` begin
  a piece of their own); the only look-ahead, ``\\s+(?!\\S)``, concerns whitespace runs, and none ends at
  ``c`` when ``T[c-1]`` is a letter. So a cut is safe between an ASCII letter or CJK ideograph and a
  following space, ASCII punctuation other than ``_`` or CJK punctuation. None of these is a combining
  character, so NFC is unaffected.

**Enough tokens.** :func:`token_prefixes` tries the first safe cut after ``8 x tokens`` characters; when the
prefix holds no more than ``tokens`` tokens (long words, dense scripts) it tries again from twice that
cut, until a prefix holds more than ``tokens`` tokens or no safe cut is left (the whole text). A prefix
with more than ``tokens`` tokens has the first ``tokens + 1`` tokens of the whole text, so truncating it to
``tokens`` tokens, or reading the end offset of token number ``tokens``, gives what the whole text gives.
The prefixes tried at least double in length, so the characters tokenized stay under twice the last one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

START_CHARS_PER_TOKEN = 8
"""Characters per token of the first prefix tried: natural text averages 3 to 5, so one try is the rule."""

ASCII_PUNCTUATION = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~")
"""ASCII punctuation except ``_``, which word-only added tokens count as part of a word."""
CJK_PUNCTUATION = "\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f"
"""、。！，：；？ (Unicode category Po: punctuation for BERT, neither letter nor number for \\p{L}/\\p{N})."""
CJK_IDEOGRAPHS = "\u4e00-\u9fff"
"""CJK Unified Ideographs: letters (\\p{L}) in every Unicode version, and isolated by BERT's normalizer."""

QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
CL100K_SPLIT = QWEN_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
KNOWN_SPLITS = frozenset({QWEN_SPLIT, CL100K_SPLIT})
"""Split expressions whose boundaries the module docstring proves (Qwen2; GPT-4's cl100k groups digits)."""


@dataclass(frozen=True)
class CutRule:
    """Where a tokenizer family may be cut: ``at`` matches a position (zero width) that is a safe cut as
    far as normalization and pre-tokenization go; ``added`` are the added tokens that must not span it."""

    family: str
    at: re.Pattern[str]
    added: tuple[str, ...]

    def safe_cut(self, text: str, start: int) -> int | None:
        """The first safe cut at or after ``start`` (never 0 or the text's end), or None."""
        position = max(start, 1)
        while position < len(text):
            found = self.at.search(text, position)
            if found is None:
                return None
            cut = found.start()
            if not self._inside_added(text, cut):
                return cut
            position = cut + 1
        return None

    def _inside_added(self, text: str, cut: int) -> bool:
        """Whether an occurrence of an added token starts before ``cut`` and ends after it."""
        return any(
            text.find(token, max(cut - len(token) + 1, 0), cut + len(token) - 1) != -1 for token in self.added
        )


BERT_ISOLATED = f"{ASCII_PUNCTUATION}_{CJK_PUNCTUATION}{CJK_IDEOGRAPHS}"
BERT_BREAK = re.compile(f"(?=[ {BERT_ISOLATED}])|(?<=[{BERT_ISOLATED}])")
LETTER_THEN_BREAK = re.compile(f"(?<=[A-Za-z{CJK_IDEOGRAPHS}])(?=[ {ASCII_PUNCTUATION}{CJK_PUNCTUATION}])")


def cut_rule(tokenizer: Any) -> CutRule | None:
    """The :class:`CutRule` of ``tokenizer``'s family, or None when its normalizer, pre-tokenizer, model or
    truncation side is not one the module docstring proves safe (such texts are tokenized whole)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "truncation_side", "right") != "right":
        return None
    normalizer = _state(backend.normalizer)
    pre_tokenizer = _state(backend.pre_tokenizer)
    model = type(backend.model).__name__
    tokens = [token for token in tokenizer.added_tokens_decoder.values() if len(token.content) > 1]
    if any(token.normalized for token in tokens):
        return None  # matched in the normalized text, where the cut's position is not the raw one
    added = tuple(token.content for token in tokens)
    bert = (model, normalizer.get("type"), pre_tokenizer.get("type"))
    if bert == ("WordPiece", "BertNormalizer", "BertPreTokenizer"):
        return CutRule("bert", BERT_BREAK, added)
    if (
        model == "BPE"
        and not getattr(backend.model, "dropout", None)  # BPE dropout tokenizes at random
        and normalizer.get("type") in (None, "NFC")
        and _known_byte_level(pre_tokenizer)
    ):
        return CutRule("byte-level", LETTER_THEN_BREAK, added)
    return None


def _state(component: Any) -> dict[str, Any]:
    """A tokenizer component's own settings (its serialised state), {} for none."""
    return {} if component is None else json.loads(component.__getstate__())


def _known_byte_level(pre_tokenizer: dict[str, Any]) -> bool:
    """``Sequence[Split(known expression, Isolated), ByteLevel(use_regex=False)]``."""
    steps = pre_tokenizer.get("pretokenizers") if pre_tokenizer.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return False
    split, byte_level = steps
    return (
        split.get("type") == "Split"
        and split.get("pattern", {}).get("Regex") in KNOWN_SPLITS
        and split.get("behavior") == "Isolated"
        and not split.get("invert")
        and byte_level.get("type") == "ByteLevel"
        and not byte_level.get("use_regex", True)
    )


def token_prefixes(tokenizer: Any, texts: Sequence[str], tokens: int | Sequence[int]) -> list[str]:
    """Each text, or its shortest tried prefix (see the module docstring) that holds more than
    ``tokens`` tokens (one count for all, or one per text) without special tokens: what the tokenizer
    reads of a text cut so is what it reads of the whole text, up to that many tokens and one more."""
    wanted = [tokens] * len(texts) if isinstance(tokens, int) else list(tokens)
    rule = cut_rule(tokenizer)
    result = list(texts)
    if rule is None:
        return result
    starts = {i: max(wanted[i], 1) * START_CHARS_PER_TOKEN for i in range(len(texts))}
    while starts:
        cuts = {i: rule.safe_cut(texts[i], start) for i, start in starts.items()}
        tried = [i for i, cut in cuts.items() if cut is not None]
        prefixes = [texts[i][: cuts[i]] for i in tried]
        counts = tokenizer(prefixes, add_special_tokens=False, verbose=False)["input_ids"] if prefixes else []
        starts = {}
        for i, prefix, ids in zip(tried, prefixes, counts, strict=True):
            if len(ids) > wanted[i]:
                result[i] = prefix
            else:
                starts[i] = 2 * len(prefix)
    return result
