"""Paired significance tests over per-query differences, selected by name (``--test``).

Every test takes the per-query differences ``run - baseline`` (one value per qrels query, paired by query
id before they get here) and answers a two-sided p-value for "the mean difference is 0", plus a confidence
interval of the mean difference. The registry lets the CLI list the tests and the comparison code call
them without knowing each one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lyre.basics.errors import LyreError
from lyre.retrieval.significance import bootstrap, randomization, t_test, wilcoxon
from lyre.retrieval.significance.differences import as_differences

PValue = Callable[..., float]
Interval = Callable[..., tuple[float, float]]


@dataclass(frozen=True)
class PairedTest:
    """One test: its p-value function, the interval it reports, and how the table footer describes it."""

    name: str
    p_value: PValue
    interval: Interval
    summary: str
    interval_summary: str
    resamples: bool
    """Whether ``samples`` and ``seed`` matter (a Monte Carlo p-value or interval)."""


SIGNIFICANCE_TESTS: dict[str, PairedTest] = {
    "t": PairedTest(
        "t", t_test.p_value, t_test.interval, "paired Student t-test", "Student t interval", False
    ),
    "randomization": PairedTest(
        "randomization",
        randomization.p_value,
        bootstrap.interval,
        "paired randomization test (random sign flips of the differences)",
        "bootstrap percentile interval",
        True,
    ),
    "bootstrap": PairedTest(
        "bootstrap",
        bootstrap.p_value,
        bootstrap.interval,
        "paired bootstrap test (resampling the centred differences)",
        "bootstrap percentile interval",
        True,
    ),
    "wilcoxon": PairedTest(
        "wilcoxon",
        wilcoxon.p_value,
        bootstrap.interval,
        "Wilcoxon signed-rank test (zero differences dropped)",
        "bootstrap percentile interval",
        True,
    ),
}


def paired_test(name: str) -> PairedTest:
    """The test called ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in SIGNIFICANCE_TESTS:
        raise LyreError(f"unknown test {name!r}; choose one of {', '.join(SIGNIFICANCE_TESTS)}")
    return SIGNIFICANCE_TESTS[name]


MAX_SAMPLES = 1_000_000
"""Resamples: a p-value resolution of 1e-6, far below any corrected significance level; the time grows
with samples x queries x runs x measures (200 million samples of 30 queries took 3 minutes)."""


def resample_bytes(samples: int) -> int:
    """Memory a Monte Carlo test or interval needs for ``samples`` draws: every resampled mean (the
    percentile interval sorts them) and one block of draws."""
    return samples * 8 + bootstrap.BLOCK_BYTES


__all__ = [
    "MAX_SAMPLES",
    "SIGNIFICANCE_TESTS",
    "PairedTest",
    "as_differences",
    "paired_test",
    "resample_bytes",
]
