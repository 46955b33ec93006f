"""Snippets: the passage of a document that holds most of a query's terms, with those terms marked.

A word is a query term when the BM25 analyzer of the index (the same one that scored the document) turns
it into a term the query also has: "Proteins" in a document marks the query word "protein". A document is
analysed once (:class:`AnalyzedText`: its words and, per term, where they are), so a snippet for any query
is a lookup of the query's terms, not a pass over the text. The snippet is :data:`SNIPPET_WORDS` words
around the earliest run of matches, within that many words, holding the most distinct query terms (a few
words of context before it); the opening words when nothing matches. Highlights are character spans into
the returned text, so the page marks them without analysing again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SNIPPET_WORDS = 40
"""Words in a snippet: about two lines of the page."""
LEAD_WORDS = 5
"""Words of context shown before the first match, where the snippet has room."""

Terms = Callable[[str], Sequence[str]]
"""An analyzer: text -> index terms (``indexes.analyzer.Analyzer.analyze``)."""


@dataclass(frozen=True)
class Marked:
    """A text and the character spans (start, end) of its query terms, in order, not overlapping."""

    text: str
    spans: list[tuple[int, int]]


@dataclass(frozen=True)
class AnalyzedText:
    """A text's words (character spans, as the analyzer's tokenizer finds them) and, for each index
    term, the positions of the words that analyse to it."""

    text: str
    words: list[tuple[int, int]]
    positions: dict[str, list[int]]

    @classmethod
    def of(cls, text: str, analyze: Terms, pattern: re.Pattern[str]) -> AnalyzedText:
        words = [match.span() for match in pattern.finditer(text)]
        positions: dict[str, list[int]] = {}
        for position, (start, end) in enumerate(words):
            for term in dict.fromkeys(analyze(text[start:end])):
                positions.setdefault(term, []).append(position)
        return cls(text, words, positions)

    def matches(self, query_terms: frozenset[str]) -> list[tuple[int, str]]:
        """(word position, query term) of every word that is a query term, in text order."""
        found = {position: term for term in query_terms for position in self.positions.get(term, ())}
        return sorted(found.items())


def best_run(matches: Sequence[tuple[int, str]], size: int) -> tuple[int, int] | None:
    """(first, last) word positions of the earliest run of matches within ``size`` words that holds the
    most distinct terms (None without matches). One pass: the run's term counts change as it slides."""
    counts: dict[str, int] = {}
    best: tuple[int, int] | None = None
    best_count = 0
    left = 0
    for position, term in matches:
        counts[term] = counts.get(term, 0) + 1
        while matches[left][0] <= position - size:
            gone = matches[left][1]
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
            left += 1
        if len(counts) > best_count:
            best, best_count = (matches[left][0], position), len(counts)
    return best


def snippet(analyzed: AnalyzedText, query_terms: frozenset[str], size: int = SNIPPET_WORDS) -> Marked:
    """The ``size``-word passage of the text around its best run of query terms, "..." where cut."""
    text, words = analyzed.text, analyzed.words
    if not words:
        return Marked(text, [])
    matches = analyzed.matches(query_terms)
    run = best_run(matches, size)
    first = 0
    if run is not None:
        lead = max(0, min(LEAD_WORDS, size - (run[1] - run[0] + 1)))
        first = max(0, min(run[0] - lead, len(words) - size))
    last = min(first + size, len(words)) - 1
    start = 0 if first == 0 else words[first][0]
    end = len(text) if last == len(words) - 1 else words[last][1]
    prefix = "" if start == 0 else "... "
    suffix = "" if end == len(text) else " ..."
    shift = len(prefix) - start
    spans = [
        (words[position][0] + shift, words[position][1] + shift)
        for position, _ in matches
        if first <= position <= last
    ]
    return Marked(prefix + text[start:end] + suffix, spans)


def highlight(analyzed: AnalyzedText, query_terms: frozenset[str]) -> Marked:
    """The whole text with the query's terms marked (a document opened from the result list)."""
    return Marked(analyzed.text, [analyzed.words[position] for position, _ in analyzed.matches(query_terms)])
