"""Second search through the index's cache: a ``lyre search`` that changes only fusion settings, against
the first one that filled the cache, and against an uncached run with the same settings (same bytes).

Three commands, each timed as a whole (process start, imports, reading, searching, writing) and by its
own in-process time (the ``wrote ... N s`` line of ``lyre search``):
1. hybrid RRF, no reranking, with the cache emptied first (a cold cache: every query encoded, both sides
   searched);
2. the same with only ``--fusion linear --weight 0.3`` changed: the first stages come from the cache;
3. the settings of 2 with ``--no-cache``, whose run must equal 2's byte for byte.

Usage: ``python benchmarks/search_cache.py --index INDEX --queries QUERIES [--qrels QRELS]`` (``--keep-cache``
leaves INDEX/cache as it is instead of emptying it first). Writes ``benchmarks/results/search_cache.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "search_cache.md"
WROTE = re.compile(r"wrote .*, ([0-9.]+) s$")


def lyre_search(
    index: Path, queries: Path, qrels: Path | None, out: Path, *extra: str
) -> tuple[float, float, str]:
    """Run one ``lyre search``: (wall seconds of the whole command, its in-process seconds, command)."""
    args = ["search", "--index", str(index), "--queries", str(queries), "--out", str(out)]
    args += [*(["--qrels", str(qrels)] if qrels else []), "--rerank-depth", "0", *extra]
    command = [sys.executable, "-m", "cli", *args]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"lyre search failed:\n{result.stderr}")
    found = WROTE.search(result.stdout.strip())
    if found is None:
        raise SystemExit(f"no 'wrote ...' line in: {result.stdout!r}")
    return wall, float(found.group(1)), "lyre " + shlex.join(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="A hybrid (BM25 + dense) lyre index.")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, default=None, help="Keep only the queries judged here.")
    parser.add_argument("--keep-cache", action="store_true", help="Do not empty INDEX/cache first.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if not args.keep_cache:
        shutil.rmtree(args.index / "cache", ignore_errors=True)
    linear = ("--fusion", "linear", "--weight", "0.3")
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        first = lyre_search(args.index, args.queries, args.qrels, runs / "first.run")
        second = lyre_search(args.index, args.queries, args.qrels, runs / "second.run", *linear)
        uncached = lyre_search(
            args.index, args.queries, args.qrels, runs / "uncached.run", *linear, "--no-cache"
        )
        identical = (runs / "second.run").read_bytes() == (runs / "uncached.run").read_bytes()
        lines = (runs / "second.run").read_bytes().count(b"\n")
    load = os.getloadavg()[0]
    rows = [
        ("1. first search (cold cache)", first),
        ("2. only fusion changed (cache)", second),
        ("3. settings of 2, --no-cache", uncached),
    ]
    table = ["| search | whole command s | in-process s |", "|---|---:|---:|"]
    table += [f"| {name} | {wall:.2f} | {inside:.2f} |" for name, (wall, inside, _) in rows]
    report = [
        "# Second search through the cache",
        "",
        f"Command: `python benchmarks/search_cache.py --index {args.index} --queries {args.queries}"
        + (f" --qrels {args.qrels}`" if args.qrels else "`"),
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} while measuring; "
        f"{lines:,} lines per run.",
        "",
        *table,
        "",
        f"Speed-up of 2 over 1: **{first[0] / second[0]:.1f}x** for the whole command, "
        f"**{first[1] / second[1]:.1f}x** in-process.",
        f"Run 2 byte-identical to run 3 (uncached, same settings): **{'yes' if identical else 'NO'}**.",
        "",
        "The commands:",
        "",
        *[f"- `{command}`" for _, (_, _, command) in rows],
        "",
        "The whole command includes Python's start-up and lyre's imports (about 0.3 s; `lyre --help` alone),",
        "which bound what a cached search can save. What remains of run 2 is fusing two 1,000-deep lists per",
        "query, cutting, and writing the run (the first stages are read from INDEX/cache/cache.sqlite).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n", encoding="utf-8")
    print("\n".join(report))
    if not identical:
        raise SystemExit("the cached run differs from the uncached one")


if __name__ == "__main__":
    main()
