"""Multiple-testing corrections against closed-form examples worked by hand."""

from __future__ import annotations

import pytest
from lyre.basics.errors import LyreError
from lyre.retrieval.correction import CORRECTIONS, correction

RAW = [0.01, 0.04, 0.03, 0.005]


def test_bonferroni_multiplies_by_the_family_size_and_caps_at_one() -> None:
    assert correction("bonferroni").adjust(RAW) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert correction("bonferroni").adjust([0.3, 0.6]) == pytest.approx([0.6, 1.0])


def test_holm_step_down_closed_form() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert correction("holm").adjust(RAW) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert correction("holm").adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_benjamini_hochberg_step_up_closed_form() -> None:
    # sorted: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 -> running min from the top
    assert correction("bh").adjust(RAW) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # the step-up lowers an earlier value to a later, smaller one: 0.02*3/2=0.03 > 0.025*3/3=0.025
    assert correction("bh").adjust([0.001, 0.02, 0.025]) == pytest.approx([0.003, 0.025, 0.025])


def test_single_comparison_is_unchanged_by_every_correction() -> None:
    for name in CORRECTIONS:
        assert correction(name).adjust([0.037]) == pytest.approx([0.037])


def test_none_returns_the_raw_values_and_unknown_names_are_refused() -> None:
    assert correction("none").adjust(RAW) == RAW
    with pytest.raises(LyreError, match="holm"):
        correction("sidak")


def test_corrections_are_ordered_as_theory_says() -> None:
    """BH <= Holm <= Bonferroni for every p-value (Holm is uniformly more powerful than Bonferroni)."""
    raw = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
    bh, holm, bonf = (correction(n).adjust(raw) for n in ("bh", "holm", "bonferroni"))
    for values in zip(raw, bh, holm, bonf, strict=True):
        assert values[0] <= values[1] + 1e-15 <= values[2] + 2e-15 <= values[3] + 3e-15
