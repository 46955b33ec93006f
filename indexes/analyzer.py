"""The BM25 analyzer: text -> index terms, as a small declared record saved with the index.

Queries must be analysed exactly like the documents (peers' most common BM25 bug is a mismatch), so the
analyzer is data: its parameters go to ``analyzer.json`` next to the index, with the versions of the
libraries whose behaviour defines the terms (a stemmer upgrade can change terms, hence scores).

The default ``english`` analyzer follows Anserini's DefaultEnglishAnalyzer, which produced the Pyserini
BEIR BM25 numbers: Lucene StandardTokenizer (UAX#29 words, approximated by ``LUCENE_TOKEN_PATTERN``),
EnglishPossessiveFilter, LowerCaseFilter, the 33-word Lucene English stop set, then the Porter stemmer
(Anserini's default ``-stemmer porter``). PyStemmer's ``porter`` is Snowball's port of the original Porter
algorithm, the same algorithm as Lucene's PorterStemFilter; ``english`` (Porter2) is the other option.
Measured nDCG@10 (k1=0.9, b=0.4, lucene): ``porter`` 0.6777 SciFact / 0.3201 NFCorpus, ``english``
0.6823 / 0.3203, Pyserini 0.6789 / 0.3218. Both pass; ``porter`` is the default because it is
Anserini's configuration and lands nearest the reference (remaining gap: Lucene's one-byte lossy
document lengths).

``cjk-bigram`` follows Lucene's CJKAnalyzer: runs of Han/Kana/Hangul characters become overlapping
character bigrams (a lone character stays a unigram); other words are tokenised as in ``english``,
without stemming.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any

from lyre.basics.errors import LyreError
from lyre.basics.provenance import library_versions
from lyre.indexes.bm25s_compat import stopwords as bm25s_stopwords

LUCENE_TOKEN_PATTERN = r"\w+(?:(?:(?<=[^\W\d])['’.](?=[^\W\d])|(?<=\d)[.,'’](?=\d))\w+)*"
"""UAX#29-like words: letters+digits joined; "don't", "u.s", "3.14", "1,000" kept whole; hyphens split."""

LUCENE_ENGLISH_STOPWORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to",
    "was", "will", "with",
)  # fmt: skip
"""Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, the stop set Anserini uses by default."""

_CJK_RUN = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]+"
)
WORDS_KEPT = 1 << 18
"""Words whose terms an analyzer remembers (a few tens of MB at most); past it, it starts again."""
KINDS = ("standard", "cjk-bigram")
PRESETS: dict[str, dict[str, Any]] = {
    "english": {},
    "english-snowball": {"stemmer": "english"},
    "cjk-bigram": {"kind": "cjk-bigram", "stemmer": "none", "possessive": False},
    "plain": {"stopwords": "none", "stemmer": "none", "possessive": False},
}
"""Named analyzers the CLI offers; each is the default record with these fields changed."""


def stopword_list(name_or_words: str | Iterable[str]) -> frozenset[str]:
    """The stop set for a name ("lucene", "none", "bm25s-<list>" e.g. "bm25s-german") or explicit words."""
    if not isinstance(name_or_words, str):
        return frozenset(word.lower() for word in name_or_words)
    if name_or_words == "lucene":
        return frozenset(LUCENE_ENGLISH_STOPWORDS)
    if name_or_words == "none":
        return frozenset()
    if name_or_words.startswith("bm25s-"):
        words = bm25s_stopwords(name_or_words[len("bm25s-") :])
        if words is not None:
            return frozenset(words)
    raise LyreError(
        f"unknown stopword list {name_or_words!r}; use 'lucene', 'none', a bm25s list such as 'bm25s-en' "
        "or 'bm25s-german', or give the words explicitly"
    )


def stemmer_languages() -> list[str]:
    import Stemmer

    return sorted(Stemmer.algorithms())


@dataclass(frozen=True)
class Analyzer:
    """Declared analysis steps; ``analyze(text)`` applies them in Lucene's order.

    kind: "standard" (pattern words) or "cjk-bigram". lowercase: fold case first. token_pattern: regex
    whose matches are the words. possessive: drop a trailing "'s" (Lucene EnglishPossessiveFilter).
    stopwords: a list name or explicit words, removed before stemming. stemmer: a PyStemmer language
    ("porter", "english", "german", ...) or "none".
    """

    kind: str = "standard"
    lowercase: bool = True
    token_pattern: str = LUCENE_TOKEN_PATTERN
    possessive: bool = True
    stopwords: str | tuple[str, ...] = "lucene"
    stemmer: str = "porter"
    versions: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Versions of PyStemmer/bm25s this analyzer was saved with (empty for a fresh one)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LyreError(f"unknown analyzer kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if not isinstance(self.stopwords, str):
            object.__setattr__(self, "stopwords", tuple(self.stopwords))
        if self.stemmer != "none" and self.stemmer not in stemmer_languages():
            raise LyreError(
                f"unknown stemmer {self.stemmer!r}; use 'none' or a PyStemmer language: "
                + ", ".join(stemmer_languages())
            )
        try:
            re.compile(self.token_pattern)
        except re.error as error:
            raise LyreError(f"token pattern {self.token_pattern!r} is not a valid regex ({error})") from None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Analyzer:
        """A named analyzer (see PRESETS) with optional field overrides."""
        if name not in PRESETS:
            raise LyreError(f"unknown analyzer {name!r}; use one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The saved form, with the current library versions (those the terms were produced with)."""
        record = asdict(self)
        record["stopwords"] = self.stopwords if isinstance(self.stopwords, str) else list(self.stopwords)
        record["versions"] = current_versions()
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Analyzer:
        known = {f.name for f in fields(cls)}
        unknown = set(record) - known
        if unknown:
            raise LyreError(f"analyzer record has unknown fields {sorted(unknown)}; rebuild the index")
        stopwords = record.get("stopwords", "lucene")
        return cls(**{**record, "stopwords": stopwords if isinstance(stopwords, str) else tuple(stopwords)})

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(self.token_pattern)

    @cached_property
    def _stopset(self) -> frozenset[str]:
        return stopword_list(self.stopwords)

    @cached_property
    def _stem(self) -> Any:
        if self.stemmer == "none":
            return None
        import Stemmer

        return Stemmer.Stemmer(self.stemmer).stemWord

    def words(self, text: str) -> list[str]:
        """Surface words before stopping and stemming (lowercased, possessives dropped, CJK bigrammed)."""
        if self.lowercase:
            text = text.lower()
        if self.kind == "cjk-bigram":
            return self._cjk_words(text)
        words = self._pattern.findall(text)
        if self.possessive:
            words = [_strip_possessive(word) for word in words]
        return words

    def _cjk_words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text)  # CJKWidthFilter: full/half-width forms folded
        words: list[str] = []
        start = 0
        for run in _CJK_RUN.finditer(text):
            words.extend(self._pattern.findall(text[start : run.start()]))
            chars = run.group()
            words.extend([chars] if len(chars) == 1 else [chars[i : i + 2] for i in range(len(chars) - 1)])
            start = run.end()
        words.extend(self._pattern.findall(text[start:]))
        return words

    @cached_property
    def _terms(self) -> dict[str, str | None]:
        """The terms of the words seen so far: a collection's words recur (feedback analyses thousands of
        documents per search), so each is stopped and stemmed once, up to :data:`WORDS_KEPT` words."""
        return {}

    def term(self, word: str) -> str | None:
        """The index term of one surface word, or None for a stopword (stopping precedes stemming)."""
        known = self._terms
        if word in known:
            return known[word]
        if len(known) >= WORDS_KEPT:
            known.clear()
        found = None if word in self._stopset or not word else self._stem(word) if self._stem else word
        known[word] = found
        return found

    def analyze(self, text: str) -> list[str]:
        """The terms of ``text`` in order (duplicates kept: a repeated query term counts twice)."""
        return [term for term in map(self.term, self.words(text)) if term is not None]

    def preset_name(self) -> str | None:
        """The name of the preset this analyzer is (versions aside), or None for a custom one."""
        return next((name for name in PRESETS if Analyzer.preset(name) == self), None)

    def describe(self) -> str:
        """``english (porter stemmer, lucene stopwords)``: how a message names this analyzer."""
        stopwords = self.stopwords if isinstance(self.stopwords, str) else f"{len(self.stopwords)} custom"
        steps = [f"{self.stemmer} stemmer" if self.stemmer != "none" else "no stemmer"]
        steps.append(f"{stopwords} stopwords" if stopwords != "none" else "no stopwords")
        if self.kind != "standard":
            steps.insert(0, self.kind)
        return f"{self.preset_name() or 'custom'} ({', '.join(steps)})"

    def suggest_for(self, texts: Iterable[str]) -> str | None:
        """A preset that would give ``texts`` (queries with no term this analyzer's index knows) terms,
        or None when no analyzer would help (their words are simply absent from the documents).

        CJK text needs ``cjk-bigram``: a standard analyzer keeps a run of Han characters as one word, which
        matches nothing unless a document holds the very same run. Texts whose every word is a stopword
        need ``plain``, which keeps them."""
        texts = list(texts)
        if self.kind != "cjk-bigram" and any(_CJK_RUN.search(text) for text in texts):
            return "cjk-bigram"
        stopped_only = all(self.words(text) and not self.analyze(text) for text in texts)
        if texts and stopped_only and self._stopset:
            return "plain"
        return None


def _strip_possessive(word: str) -> str:
    if len(word) > 2 and word[-1] == "s" and word[-2] in "'’":
        return word[:-2]
    return word


def current_versions() -> dict[str, str]:
    versions = library_versions("PyStemmer", "bm25s")
    return {name: versions[name] for name in ("PyStemmer", "bm25s")}
