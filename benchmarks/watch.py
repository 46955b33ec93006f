"""Run one command and measure what it costs: wall time, peak host memory, and the GPU memory it takes.

Host: the peak resident memory of the command's process tree, sampled with psutil every --interval
seconds, and the kernel's ``ru_maxrss`` of the largest child (exact, but per process). GPU: free memory
from ``nvidia-smi`` before the command, the lowest seen while it ran, and after; a command that must not
touch the GPU (lyre's BM25 path) shows the same free memory throughout. Prints one JSON object (also
written to --json).

    python benchmarks/watch.py --json OUT.json -- lyre index CORPUS --out INDEX
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def gpu_free_mib() -> list[int] | None:
    """Free memory of every visible GPU in MiB (None where nvidia-smi is absent)."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    return [int(line) for line in result.stdout.split() if line.strip().isdigit()]


def tree_rss(process: Any) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil

    total = 0
    try:
        for member in [process, *process.children(recursive=True)]:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                continue
    except psutil.Error:
        return 0
    return total


def watch(command: list[str], interval: float) -> dict[str, Any]:
    import psutil

    before = gpu_free_mib()
    started = time.perf_counter()
    child = subprocess.Popen(command)
    process = psutil.Process(child.pid)
    peak_rss = 0
    lowest = list(before) if before else None
    next_gpu_sample = 0.0
    while child.poll() is None:
        peak_rss = max(peak_rss, tree_rss(process))
        now = time.perf_counter()
        if lowest is not None and now >= next_gpu_sample:  # nvidia-smi itself takes ~50 ms
            sample = gpu_free_mib() or lowest
            lowest = [min(a, b) for a, b in zip(lowest, sample, strict=False)]
            next_gpu_sample = now + max(interval, 0.5)
        time.sleep(interval)
    wall = time.perf_counter() - started
    return {
        "command": command,
        "exit_code": child.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_tree_gib": round(peak_rss / 2**30, 3),
        "max_child_ru_maxrss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
        "gpu_free_mib_before": before,
        "gpu_free_mib_lowest_during": lowest,
        "gpu_free_mib_after": gpu_free_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    result = watch(command, args.interval)
    text = json.dumps(result, indent=2)
    print(text, file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    sys.exit(result["exit_code"])


if __name__ == "__main__":
    main()
