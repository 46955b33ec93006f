"""Second search through the index's cache: a ``lyre search`` that changes only fusion settings, against
the first one that filled the cache, and against an uncached run with the same settings (same bytes).

Three commands, each timed as a whole (process start, imports, reading, searching, writing) and by its
own in-process time (the ``wrote ... N s`` line of ``lyre search``):
1. hybrid RRF, no reranking, with the cache emptied first (a cold cache: every query encoded, both sides
   searched);
2. the same with only ``--fusion linear --weight 0.3`` changed: the first stages come from the cache;
3. the settings of 2 with ``--no-cache``, whose run must equal 2's byte for byte.

The three commands are repeated ``--repeat`` times (the cache emptied before each first search) and the
medians reported, so one slow start on a shared machine does not decide the ratio. The commands run with
Python's default bytecode cache (``PYTHONDONTWRITEBYTECODE`` removed from their environment, after one
``lyre search --help`` has compiled lyre's modules), as an installed lyre runs: without it every command
compiles lyre's modules again (about 0.06 s here), which says nothing about lyre's cache.

Usage: ``python benchmarks/search_cache.py --index INDEX --queries QUERIES [--qrels QRELS] [--repeat N]``
(``--keep-cache`` leaves INDEX/cache as it is before the first repetition). Writes
``benchmarks/results/search_cache.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "search_cache.md"
WROTE = re.compile(r"wrote .*, ([0-9.]+) s$")
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def lyre_search(
    index: Path, queries: Path, qrels: Path | None, out: Path, *extra: str
) -> tuple[float, float, str]:
    """Run one ``lyre search``: (wall seconds of the whole command, its in-process seconds, command)."""
    args = ["search", "--index", str(index), "--queries", str(queries), "--out", str(out)]
    args += [*(["--qrels", str(qrels)] if qrels else []), "--rerank-depth", "0", *extra]
    command = [sys.executable, "-m", "lyre", *args]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, env=ENVIRONMENT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"lyre search failed:\n{result.stderr}")
    found = WROTE.search(result.stdout.strip())
    if found is None:
        raise SystemExit(f"no 'wrote ...' line in: {result.stdout!r}")
    return wall, float(found.group(1)), "lyre " + shlex.join(args)


def start_up() -> float:
    """Seconds of ``lyre search --help``: Python's start, lyre's imports for the command, Typer (the first
    call also compiles lyre's modules into the bytecode cache)."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "lyre", "search", "--help"]
    subprocess.run(command, cwd=REPO, capture_output=True, check=True, env=ENVIRONMENT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="A hybrid (BM25 + dense) lyre index.")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, default=None, help="Keep only the queries judged here.")
    parser.add_argument("--keep-cache", action="store_true", help="Do not empty INDEX/cache first.")
    parser.add_argument("--repeat", type=int, default=3, help="Repetitions; medians are reported.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    start_up()  # compiles lyre's modules into the bytecode cache
    startup = statistics.median(start_up() for _ in range(3))
    linear = ("--fusion", "linear", "--weight", "0.3")
    measured: list[list[tuple[float, float, str]]] = [[], [], []]
    identical = True
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        for repetition in range(args.repeat):
            if repetition or not args.keep_cache:
                shutil.rmtree(args.index / "cache", ignore_errors=True)
            measured[0].append(lyre_search(args.index, args.queries, args.qrels, runs / "first.run"))
            measured[1].append(
                lyre_search(args.index, args.queries, args.qrels, runs / "second.run", *linear)
            )
            measured[2].append(
                lyre_search(
                    args.index, args.queries, args.qrels, runs / "uncached.run", *linear, "--no-cache"
                )
            )
            identical &= (runs / "second.run").read_bytes() == (runs / "uncached.run").read_bytes()
        lines = (runs / "second.run").read_bytes().count(b"\n")
    load = os.getloadavg()[0]
    rows = [
        ("1. first search (cold cache)", measured[0]),
        ("2. only fusion changed (cache)", measured[1]),
        ("3. settings of 2, --no-cache", measured[2]),
    ]
    medians = [
        (statistics.median(wall for wall, _, _ in times), statistics.median(inside for _, inside, _ in times))
        for _, times in rows
    ]
    table = [
        "| search | whole command s (median) | each repetition | in-process s (median) |",
        "|---|---:|---|---:|",
    ]
    table += [
        f"| {name} | {wall:.2f} | {', '.join(f'{t[0]:.2f}' for t in times)} | {inside:.2f} |"
        for (name, times), (wall, inside) in zip(rows, medians, strict=True)
    ]
    first, second = medians[0], medians[1]
    report = [
        "# Second search through the cache",
        "",
        f"Command: `python benchmarks/search_cache.py --index {args.index} --queries {args.queries}"
        + (f" --qrels {args.qrels}" if args.qrels else "")
        + f" --repeat {args.repeat}`",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} while measuring; "
        f"{lines:,} lines per run; {args.repeat} repetitions (cache emptied before each first search); "
        "Python's bytecode cache on.",
        "",
        *table,
        "",
        f"Speed-up of 2 over 1: **{first[0] / second[0]:.1f}x** for the whole command, "
        f"**{first[1] / second[1]:.1f}x** in-process.",
        f"Run 2 byte-identical to run 3 (uncached, same settings) in every repetition: "
        f"**{'yes' if identical else 'NO'}**.",
        "",
        "The commands:",
        "",
        *[f"- `{times[0][2]}`" for _, times in rows],
        "",
        f"The whole command includes Python's start-up, lyre's imports and Typer ({startup:.2f} s: the",
        "median of `lyre search --help`), which bounds what a cached search can save. What remains of run 2",
        "is reading 600 lists from INDEX/cache/cache.sqlite, fusing two 1,000-deep lists per query, cutting,",
        "and writing the run (the exact `repr` of 300k scores alone takes about 0.11 s).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n", encoding="utf-8")
    print("\n".join(report))
    if not identical:
        raise SystemExit("the cached run differs from the uncached one")


if __name__ == "__main__":
    main()
