"""Snippets and highlights of ``lyre serve`` (:mod:`serve.snippets`): the passage around the earliest run
of words richest in query terms, terms found through the index's analyzer (stemmed, stopwords left out),
spans that point at them."""

from __future__ import annotations

import re

from lyre.indexes.analyzer import Analyzer
from lyre.serve.snippets import AnalyzedText, best_run, highlight, snippet

ENGLISH = Analyzer.preset("english")
WORDS = re.compile(ENGLISH.token_pattern)


def analysed(text: str) -> AnalyzedText:
    return AnalyzedText.of(text, ENGLISH.analyze, WORDS)


def terms(query: str) -> frozenset[str]:
    return frozenset(ENGLISH.analyze(query))


def marked_words(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[start:end] for start, end in spans]


def test_the_best_run_is_the_earliest_with_most_distinct_terms_within_the_window() -> None:
    matches = [(1, "a"), (3, "a"), (4, "b"), (6, "a"), (7, "b"), (8, "c")]
    assert best_run(matches, 3) == (6, 8)  # a, b, c within 3 words: only at 6..8
    assert best_run(matches, 2) == (3, 4)  # two distinct terms within 2 words: first at 3..4
    assert best_run(matches, 100) == (1, 8)
    assert best_run([], 3) is None


def test_an_analysis_lists_where_each_term_is() -> None:
    text = analysed("Proteins fold; the protein's shape")
    assert text.positions["protein"] == [0, 3] and "the" not in text.positions
    assert text.matches(terms("shapes of proteins")) == [(0, "protein"), (3, "protein"), (4, "shape")]


def test_a_snippet_is_cut_around_the_terms_with_a_few_words_before_and_marks_them() -> None:
    filler = " ".join(f"w{i}" for i in range(30))
    text = f"{filler} Kneading develops the gluten networks. {filler}"
    found = snippet(analysed(text), terms("gluten network kneading"), size=8)
    # the run (5 words) and, of the 3 words left, all before it
    assert found.text == "... w27 w28 w29 Kneading develops the gluten networks ..."
    assert marked_words(found.text, found.spans) == ["Kneading", "gluten", "networks"]


def test_a_short_text_is_whole_and_stopwords_are_not_marked() -> None:
    found = snippet(analysed("The bread of the day"), terms("the bread"))
    assert found.text == "The bread of the day"
    assert marked_words(found.text, found.spans) == ["bread"]


def test_a_match_near_the_end_shows_a_full_window_that_ends_the_text() -> None:
    text = " ".join(f"w{i}" for i in range(20)) + " bread"
    found = snippet(analysed(text), terms("bread"), size=5)
    assert found.text == "... w16 w17 w18 w19 bread"
    assert marked_words(found.text, found.spans) == ["bread"]


def test_a_text_without_query_terms_opens_with_its_first_words() -> None:
    text = " ".join(f"w{i}" for i in range(50))
    found = snippet(analysed(text), terms("bread"), size=5)
    assert found.text == "w0 w1 w2 w3 w4 ..." and found.spans == []
    assert snippet(analysed(""), terms("bread")).text == ""


def test_highlight_marks_every_occurrence_in_the_whole_text() -> None:
    text = "Proteins fold. A protein's shape: PROTEIN."
    found = highlight(analysed(text), terms("protein"))
    assert found.text == text
    assert marked_words(text, found.spans) == ["Proteins", "protein's", "PROTEIN"]
