"""RM3, Rocchio and Bo1 against their published formulas, computed by hand on one feedback set.

The set: a query ``cat cat dog`` over a collection of 100 documents, five feedback documents (scores 4,
2, 1, 0.5, 0.25) whose terms were picked to exercise every rule of the three methods: a one-letter term
(``x``, too short for Anserini), a term held by 20% of the collection (``common``, over Anserini's 10%
cut), a non-ASCII term (``café``, outside RM3's ``[a-z0-9]+``), a term held by exactly 10% (``cat``, kept:
the cut is "more than"), ties in the pruning (``eel``, ``fish``, ``zebra``), and a document of nothing but
cut terms (RM3 skips it; Rocchio still counts it in the mean). Each expected weight is written as the
formula's arithmetic on these numbers, so a reader can check it with pencil and paper.
"""

from __future__ import annotations

import math

import pytest
from lyre.retrieval.feedback import bo1, rm3, rocchio
from lyre.retrieval.feedback.term_vectors import FeedbackDocument, FeedbackSet

TOLERANCE = 1e-9

DOCUMENT_FREQUENCY = {
    "cat": 10, "dog": 8, "fish": 5, "bird": 3, "eel": 2, "zebra": 1, "owl": 4, "common": 20, "x": 1,
    "café": 1,
}  # fmt: skip
FEEDBACK = [
    FeedbackDocument(4.0, {"cat": 3, "fish": 2, "x": 1, "common": 5}),
    FeedbackDocument(2.0, {"cat": 2, "fish": 1, "bird": 1, "café": 1}),
    FeedbackDocument(1.0, {"bird": 2, "eel": 1, "fish": 1, "zebra": 1}),
    FeedbackDocument(0.5, {"common": 3}),
    FeedbackDocument(0.25, {"dog": 1, "owl": 1}),
]
QUERY = ["cat", "cat", "dog"]


def feedback_set(feedback: list[FeedbackDocument], collection: dict[str, int] | None = None) -> FeedbackSet:
    return FeedbackSet(QUERY, feedback, 100, DOCUMENT_FREQUENCY, collection or {})


def assert_weights(found: dict[str, float], expected: dict[str, float]) -> None:
    assert set(found) == set(expected)
    for term, weight in expected.items():
        assert found[term] == pytest.approx(weight, abs=TOLERANCE), term
    assert list(found) == sorted(found, key=lambda term: (-found[term], term))  # heaviest first


def test_rm3_is_anserini_relevance_model_interpolated_with_the_query() -> None:
    # Documents, cut ([a-z0-9]{2,20}, df share <= 0.1) and pruned to their 3 most frequent terms:
    # D1 {cat 3, fish 2} |D1| = 5; D2 {cat 2, bird 1, fish 1} |D2| = 4 (café cut);
    # D3 {bird 2, eel 1, fish 1} |D3| = 4 (zebra pruned: the tie of three 1s keeps eel and fish);
    # D4 {} skipped; D5 {dog 1, owl 1} |D5| = 2.
    cat = 3 / 5 * 4 + 2 / 4 * 2
    fish = 2 / 5 * 4 + 1 / 4 * 2 + 1 / 4 * 1
    bird = 1 / 4 * 2 + 2 / 4 * 1
    assert bird > 1 / 4 * 1 > 1 / 2 * 0.25  # eel, then dog and owl, fall out of the top 3
    total = cat + fish + bird
    expected = {
        "cat": 0.5 * 2 / 3 + 0.5 * cat / total,
        "dog": 0.5 * 1 / 3,
        "fish": 0.5 * fish / total,
        "bird": 0.5 * bird / total,
    }
    found = rm3.expand(feedback_set(FEEDBACK), {"prf_terms": 3, "prf_weight": 0.5})
    assert_weights(found, expected)
    assert sum(found.values()) == pytest.approx(1.0, abs=TOLERANCE)  # both parts have unit L1 norm


def test_rm3_with_the_whole_weight_on_the_query_adds_nothing() -> None:
    found = rm3.expand(feedback_set(FEEDBACK), {"prf_terms": 3, "prf_weight": 1.0})
    assert_weights(found, {"cat": 2 / 3, "dog": 1 / 3})


def test_rocchio_is_anserini_mean_unit_document_added_to_the_unit_query() -> None:
    # Documents cut to 2..20 characters and df share <= 0.1 (café stays: no ASCII filter), unit L2 each:
    # D1 {cat 3, fish 2} / sqrt(13); D2 {cat 2, fish 1, bird 1, café 1} / sqrt(7);
    # D3 {bird 2, eel 1, fish 1, zebra 1} / sqrt(7); D4 {} adds nothing but counts;
    # D5 {dog 1, owl 1} / sqrt(2).
    r13, r7 = math.sqrt(13), math.sqrt(7)
    cat = (3 / r13 + 2 / r7) / 5
    fish = (2 / r13 + 1 / r7 + 1 / r7) / 5
    bird = (1 / r7 + 2 / r7) / 5
    assert (
        bird > 1 / math.sqrt(2) / 5 > 1 / r7 / 5
    )  # dog and owl, then café, eel, zebra fall out of the top 3
    norm = math.sqrt(cat**2 + fish**2 + bird**2)
    expected = {
        "cat": 1.0 * 2 / math.sqrt(5) + 0.75 * cat / norm,
        "dog": 1.0 * 1 / math.sqrt(5),
        "fish": 0.75 * fish / norm,
        "bird": 0.75 * bird / norm,
    }
    settings = {"prf_terms": 3, "prf_weight": 1.0, "rocchio_beta": 0.75}
    assert_weights(rocchio.expand(feedback_set(FEEDBACK), settings), expected)


def test_rocchio_keeps_the_terms_rm3_cuts_for_not_being_ascii() -> None:
    settings = {"prf_terms": 10, "prf_weight": 1.0, "rocchio_beta": 0.75}
    assert "café" in rocchio.expand(feedback_set(FEEDBACK), settings)
    assert "café" not in rm3.expand(feedback_set(FEEDBACK), {"prf_terms": 10, "prf_weight": 0.5})


def bose_einstein(within: float, frequency: float) -> float:
    """Amati's Bo1 with the geometric mean of the Bose-Einstein model: P = F / N, N = 100."""
    p = frequency / 100
    return within * math.log2((1 + p) / p) + math.log2(1 + p)


def test_bo1_is_terrier_parameter_free_expansion_added_to_the_query() -> None:
    # Terrier's default three feedback documents; collection frequencies F of every term.
    frequencies = {"cat": 40, "fish": 10, "x": 5, "bird": 6, "eel": 3, "dog": 12, "common": 30, "café": 1}
    # Feedback frequencies: cat 3+2 = 5 (2 documents), fish 2+1+1 = 4 (3), bird 1+2 = 3 (2), common 5 (1),
    # café 1 (1), eel 1 (1), x 1 (1), zebra 1 (1; no collection frequency: not an index term, left out).
    # Terms held by fewer than 2 of the 3 documents weigh 0 (they are no query terms).
    cat, fish, bird = bose_einstein(5, 40), bose_einstein(4, 10), bose_einstein(3, 6)
    assert fish > bird > cat
    normaliser = bose_einstein(4, 4)  # the heaviest term's (fish) feedback frequency, as its own F
    expected = {
        "cat": 1.0 * 2 / 2 + cat / normaliser,
        "dog": 1.0 * 1 / 2,
        "fish": fish / normaliser,
        "bird": bird / normaliser,
    }
    found = bo1.expand(feedback_set(FEEDBACK[:3], frequencies), {"prf_terms": 3, "prf_weight": 1.0})
    assert_weights(found, expected)


def test_bo1_keeps_at_least_as_many_terms_as_the_query_has() -> None:
    """Terrier reweighs max(terms, query terms): a long query is not cut to fewer expansion terms."""
    frequencies = {"cat": 40, "fish": 10, "bird": 6, "dog": 12}
    found = bo1.expand(feedback_set(FEEDBACK[:3], frequencies), {"prf_terms": 1, "prf_weight": 1.0})
    assert set(found) == {"cat", "dog", "fish", "bird"}  # two query terms: the two heaviest terms kept
    assert found["cat"] == 1.0  # cat, third in weight, keeps its query weight alone


def test_bo1_on_one_feedback_document_weighs_every_term() -> None:
    """With fewer than two feedback documents Terrier drops its two-document rule."""
    frequencies = {"cat": 40, "fish": 10, "x": 5, "common": 30}
    found = bo1.expand(feedback_set(FEEDBACK[:1], frequencies), {"prf_terms": 10, "prf_weight": 1.0})
    heaviest = max(
        ("cat", "fish", "x", "common"), key=lambda t: bose_einstein(FEEDBACK[0].terms[t], frequencies[t])
    )
    normaliser = bose_einstein(FEEDBACK[0].terms[heaviest], FEEDBACK[0].terms[heaviest])
    assert found["x"] == pytest.approx(bose_einstein(1, 5) / normaliser, abs=TOLERANCE)


@pytest.mark.parametrize("method", [rm3.expand, rocchio.expand, bo1.expand])
def test_without_feedback_documents_the_query_is_searched_alone(method) -> None:
    settings = {"prf_terms": 10, "prf_weight": 0.5, "rocchio_beta": 0.75}
    found = method(feedback_set([]), settings)
    assert set(found) == {"cat", "dog"}
    assert found["cat"] == pytest.approx(2 * found["dog"], abs=TOLERANCE)  # the query's own proportions
