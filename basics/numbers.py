"""How lyre prints a number, one way everywhere: counts with thousands separators, durations and rates
with units, sizes in binary units, measures with four decimals.

A user reads numbers across commands (an index summary, a search line, an evaluation table) and
compares them; printing "10365 documents" in one place and "10,365 docs" in another makes that harder.
Every message, summary and table formats through these functions.
"""

from __future__ import annotations

SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def count(value: int, what: str | None = None) -> str:
    """``10,365`` or, with ``what``, ``10,365 passages`` (``what`` is given in the plural; a count of
    exactly one drops a final ``s``, or turns a final ``ies`` into ``y``: ``1 query``)."""
    text = f"{value:,}"
    if what is None:
        return text
    if value == 1:
        what = what[:-3] + "y" if what.endswith("ies") else what.removesuffix("s")
    return f"{text} {what}"


def seconds(value: float) -> str:
    """A duration: ``0.42 s`` below ten seconds, ``12.3 s`` below ten minutes, then ``14 min 5 s``."""
    if value < 10:
        return f"{value:.2f} s"
    if value < 600:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


def rate(value: float, unit: str) -> str:
    """A throughput such as ``7,018 queries/s`` (one decimal below 100, where it still says something)."""
    return f"{value:,.1f} {unit}/s" if value < 100 else f"{value:,.0f} {unit}/s"


def size(value: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``16.5 MiB``, ``2.0 GiB``."""
    for unit in SIZE_UNITS[:-1]:
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {SIZE_UNITS[-1]}"


def measure(value: float) -> str:
    """An effectiveness measure (nDCG@10, AP, recall): four decimals, as trec_eval-derived tables print."""
    return f"{value:.4f}"


def share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with one decimal (``93.0%``); ``n/a`` when ``whole`` is 0."""
    return f"{100 * part / whole:.1f}%" if whole else "n/a"
