"""One way to print numbers (``basics/numbers.py``): closed-form expected texts."""

from __future__ import annotations

import pytest
from lyre.basics import numbers


@pytest.mark.parametrize(
    ("value", "what", "expected"),
    [(10365, "passages", "10,365 passages"), (1, "documents", "1 document"), (0, "queries", "0 queries"),
     (1, "queries", "1 query"),
     (1234567, None, "1,234,567")],
)  # fmt: skip
def test_counts_have_thousands_separators_and_a_singular(value: int, what: str | None, expected: str) -> None:
    assert numbers.count(value, what) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0.4213, "0.42 s"), (9.994, "9.99 s"), (12.34, "12.3 s"), (845.0, "14 min 5 s")]
)
def test_durations_keep_the_digits_that_matter(value: float, expected: str) -> None:
    assert numbers.seconds(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (16.5 * 2**20, "16.5 MiB"),
        (2 * 2**30, "2.0 GiB"),
        (3 * 2**40, "3.0 TiB"),
    ],
)
def test_sizes_are_in_binary_units(value: float, expected: str) -> None:
    assert numbers.size(value) == expected


def test_rates_measures_and_shares() -> None:
    assert numbers.rate(7018.4, "queries") == "7,018 queries/s"
    assert numbers.rate(29.74, "pairs") == "29.7 pairs/s"
    assert numbers.measure(0.71904) == "0.7190"
    assert numbers.share(93, 100) == "93.0%" and numbers.share(1, 0) == "n/a"
