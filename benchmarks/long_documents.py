"""Long documents end to end: whole documents (truncated) against passages with MaxP, FirstP and SumP.

Builds (once) the long-document collection of issue 14 with the shared tool ``make_long_corpus.py`` (each
document of BASE hidden among filler passages of FILLER), then for BASE itself and for the long
collection builds two indexes with ``lyre index`` (whole documents, and ``--passage-tokens N
--passage-stride S``), measuring each stage's wall time and the peak resident memory of the command's
process tree while that stage ran (sampled; a stage is over when the manifest records it). Then searches
BM25, dense and hybrid (RRF) on every index, with ``--aggregate maxp|firstp|sump`` on the passage
indexes, and evaluates nDCG@10 and R@100 against BASE's qrels. Every path is an option:

    nice -n 10 python benchmarks/long_documents.py --tool ../shared/tools/make_long_corpus.py \\
        --base ../shared/data/scifact --filler ../shared/data/nfcorpus --work /tmp/long \\
        --passage-tokens 256 --passage-stride 192 --dtype bfloat16 \\
        [--results benchmarks/results/long_documents.md]

``--dtype bfloat16`` encodes every index (whole documents too) in bfloat16, which is 4-5x faster on CPUs
with AMX and moves MiniLM's nDCG@10 by less than 0.001; omit it for the recipe's float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
MIB = 1 << 20
SAMPLE_SECONDS = 0.2
MODES = ("bm25", "dense", "hybrid")
RULES = ("maxp", "firstp", "sump")


def lyre() -> list[str]:
    return [sys.executable, "-m", "lyre"]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def build_collection(tool: Path, base: Path, filler: Path, work: Path) -> Path:
    """The long collection in ``work`` (made by the shared tool unless already there)."""
    if not (work / "corpus.jsonl").is_file():
        subprocess.run([sys.executable, str(tool), str(base), str(filler), str(work)], check=True)
    return work


def completed(index: Path) -> list[str]:
    """Stages the manifest records as complete, in the order they were recorded."""
    try:
        stages = json.loads((index / "manifest.json").read_text(encoding="utf-8"))["stages"]
    except (OSError, ValueError, KeyError):
        return []
    return [name for name, record in stages.items() if record.get("complete")]


def measure_index(command: list[str], index: Path, log: Path) -> list[dict[str, Any]]:
    """Run ``command`` (a ``lyre index`` building ``index``); per stage, in build order: its wall
    seconds and the peak RSS of the process tree while it ran."""
    import psutil
    from watch import tree_rss

    started = time.perf_counter()
    stages: list[dict[str, Any]] = []
    stage_start, stage_peak = started, 0
    with open(log, "wb") as errors:
        process = subprocess.Popen(command, stdout=errors, stderr=errors, env=environment())
        watched = psutil.Process(process.pid)
        while True:
            running = process.poll() is None
            stage_peak = max(stage_peak, tree_rss(watched) if running else 0)
            done = completed(index)
            for name in done[len(stages) :]:
                now = time.perf_counter()
                stages.append({"stage": name, "seconds": now - stage_start, "peak_rss": stage_peak})
                stage_start, stage_peak = now, 0
            if not running:
                break
            time.sleep(SAMPLE_SECONDS)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return stages


def build(args: argparse.Namespace, corpus: Path, index: Path, passages: bool) -> dict[str, Any]:
    """Build ``index`` from ``corpus`` unless it is complete; its stage costs and manifest."""
    costs_file = index.with_suffix(".costs.json")
    if not costs_file.exists():
        command = [
            *lyre(), "index", str(corpus), "--out", str(index), "--embed-model", args.model,
            "--index-type", "flat", "--quiet",
            *(["--dtype", args.dtype] if args.dtype else []),
            *(["--passage-tokens", str(args.passage_tokens), "--passage-stride", str(args.passage_stride)]
              if passages else []),
        ]  # fmt: skip
        costs = measure_index(command, index, index.with_suffix(".log"))
        costs_file.write_text(json.dumps({"command": command, "stages": costs}, indent=1))
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    return {**json.loads(costs_file.read_text()), "manifest": manifest}


def search(args: argparse.Namespace, index: Path, mode: str, rule: str | None) -> tuple[Path, str]:
    """Search the base collection's test queries on ``index``; the run file and the sidecar's passage
    section (what depth was used)."""
    out = index.parent / "runs" / f"{index.name}.{mode}{'.' + rule if rule else ''}.run"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *lyre(), "search", "--index", str(index), "--queries", str(args.base / "queries.jsonl"),
            "--qrels", str(args.base / "qrels" / "test.tsv"), "--mode", mode, "--rerank-depth", "0",
            "--out", str(out), "--quiet", *(["--aggregate", rule] if rule else []),
        ]  # fmt: skip
        subprocess.run(command, check=True, env=environment())
    sidecar = json.loads(out.with_name(out.name + ".meta.json").read_text(encoding="utf-8"))
    used = sidecar.get("passages") or {}
    return out, f"{used.get('passage_depth', '')}" if used else ""


def evaluate(qrels: Path, run: Path) -> dict[str, float]:
    from lyre.retrieval.evaluation import evaluate

    return evaluate(qrels, [run], ["nDCG@10", "R@100"]).means[str(run)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool", type=Path, required=True, help="make_long_corpus.py")
    parser.add_argument("--base", type=Path, required=True, help="BEIR folder whose documents are kept")
    parser.add_argument("--filler", type=Path, required=True, help="BEIR folder giving the filler text")
    parser.add_argument("--work", type=Path, required=True, help="folder for the collection and indexes")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--passage-tokens", type=int, default=256)
    parser.add_argument("--passage-stride", type=int, default=192)
    parser.add_argument("--dtype", default=None, help="encode every index in this dtype (e.g. bfloat16)")
    parser.add_argument("--build-only", action="store_true", help="build the indexes, search nothing")
    parser.add_argument("--results", type=Path, help="also write the report here (markdown)")
    args = parser.parse_args()

    long_corpus = build_collection(args.tool, args.base, args.filler, args.work / f"{args.base.name}-long")
    collections = {"original": args.base, "long": long_corpus}
    builds = {}
    for name, corpus in collections.items():
        for passages in (False, True):
            index = args.work / f"{name}-{'passages' if passages else 'documents'}"
            builds[name, passages] = build(args, corpus, index, passages)
    if args.build_only:
        return
    report(args, builds)


def report(args: argparse.Namespace, builds: dict[tuple[str, bool], dict[str, Any]]) -> None:
    qrels = args.base / "qrels" / "test.tsv"
    rows: dict[tuple[str, str], dict[str, str]] = {}
    depths: dict[str, str] = {}
    for name, passages in builds:
        index = args.work / f"{name}-{'passages' if passages else 'documents'}"
        for rule in RULES if passages else (None,):
            label = f"passages + {rule}" if rule else "whole documents (truncated)"
            for mode in MODES:
                run, depth = search(args, index, mode, rule)
                scores = evaluate(qrels, run)
                rows.setdefault((name, label), {})[mode] = f"{scores['nDCG@10']:.4f} / {scores['R@100']:.4f}"
                if depth:
                    depths[name] = depth
    dtype = args.dtype or "the recipe's dtype (float32 on CPU)"
    lines = [
        "# Long documents: whole documents against passages (MaxP, FirstP, SumP)",
        "",
        f"Collections: `{args.base.name}` (original) and `make_long_corpus.py {args.base.name} "
        f"{args.filler.name}` (long: each document hidden among 3 filler passages, seed 0). Model "
        f"`{args.model}`, encoded in {dtype} for every index; flat (exact) dense search; BM25 with lyre's "
        f"defaults; hybrid = RRF k=60 of the two sides, depth 1000 documents each. Passages: "
        f"`--passage-tokens {args.passage_tokens} --passage-stride {args.passage_stride}` (model tokens, "
        "title and special tokens included). Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs visible (shared), Python {platform.python_version()}.",
        "",
        "nDCG@10 / R@100 on the test queries:",
        "",
        "| collection | index | BM25 | dense | hybrid |",
        "|---|---|---|---|---|",
    ]
    for (name, label), scores in rows.items():
        lines.append(f"| {name} | {label} | {' | '.join(scores[mode] for mode in MODES)} |")
    lines += ["", "Passages retrieved per side (depth x mean passages per document, rounded up): "]
    lines += [f"- {name}: {depth}" for name, depth in depths.items()]
    lines += ["", "Indexing cost per stage (wall seconds, peak RSS of the command's process tree):", ""]
    lines += ["| index | " + " | ".join(("docstore", "passages", "bm25", "embeddings", "dense")) + " |"]
    lines += ["|---|---|---|---|---|---|"]
    for (name, passages), built in builds.items():
        costs = {stage["stage"]: stage for stage in built["stages"]}
        cells = [
            describe_cost(costs.get(stage))
            for stage in ("docstore", "passages", "bm25", "embeddings", "dense")
        ]
        lines.append(f"| {name}-{'passages' if passages else 'documents'} | {' | '.join(cells)} |")
    lines += ["", "Splitting statistics (from the manifests):", ""]
    for (name, passages), built in builds.items():
        record = built["manifest"]["stages"].get("passages")
        if passages and record:
            lines.append(f"- {name}: {record['summary']}; {describe_counts(record['counts'])}")
    lines += ["", "Commands:", ""]
    for built in builds.values():
        lines.append(f"    lyre {' '.join(built['command'][3:])}")
    report_text = "\n".join(lines) + "\n"
    print(report_text)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report_text, encoding="utf-8")


def describe_cost(cost: dict[str, Any] | None) -> str:
    """A stage's wall time and peak RSS; a stage that ended between two samples shows as below one."""
    if cost is None:
        return "-"
    if cost["seconds"] < SAMPLE_SECONDS:
        return f"< {SAMPLE_SECONDS} s"
    return f"{cost['seconds']:.1f} s, {cost['peak_rss'] / MIB:,.0f} MiB"


def describe_counts(counts: dict[str, Any]) -> str:
    return (
        f"{counts['length_unit']} per document before splitting: mean {counts['length_mean']:.0f}, "
        f"p95 {counts['length_p95']:.0f}, max {counts['length_max']:,}; "
        f"{counts['longer_than_limit']:.1%} longer than {counts['length_limit']}"
    )


if __name__ == "__main__":
    main()
