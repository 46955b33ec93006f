"""A generated 1M-document corpus through every stage of lyre, each in a fresh process: time and peak RSS.

    python benchmarks/scale_1m.py [--docs 1000000] [--model tiny|DIR] [--engine local|ray] [--work DIR]

Stages: ingest -> BM25 -> encode -> IVF-PQ (train, add, tune) -> search (hybrid, no rerank). Each stage
runs as its own child process (the same library call `lyre index` makes for it), so its peak memory is its
own: the parent samples the RSS of the child's whole process tree (Ray workers included) every 50 ms, and
the child reports its own high-water mark (``VmHWM``; not ``ru_maxrss``, which Linux carries over from the
parent across fork and exec); the table shows the larger of the two. ``--cpus N`` pins every stage to N
cores (as ``srun --cpus-per-task`` would): on a machine shared with other jobs, torch's and Faiss' spinning
worker threads collapse when they outnumber the idle cores (10x slower encoding measured here at 2 threads).
The run fails when a stage exceeds ``--memory-bound-gib`` (default 4 GiB), the bound the design promises.

``--model tiny`` (the default) saves a randomly initialised 2-layer, 64-wide BERT with the real MiniLM
tokenizer: it measures throughput and memory of lyre's machinery on 2 CPU cores, not retrieval quality
(all-MiniLM-L6-v2 would need hours for 1M documents on these cores; pass ``--model DIR`` on a GPU node).
The corpus is synthetic: Zipf-distributed pseudo-words, passage lengths log-normal around 55 words.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The tiny random model is the one the tests build (one builder, not two).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scale_fixtures import save_tiny_bert

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "bm25", "encode", "dense", "search")
VOCABULARY = 200_000
SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"] + [
    "an",
    "er",
    "in",
    "on",
    "us",
    "ex",
    "ol",
    "ic",
]
GENERATE_BLOCK = 20_000


def pseudo_word(rank: int) -> str:
    """The word of frequency rank ``rank``: frequent words get few syllables, like real text."""
    parts = []
    rank += 1
    while rank:
        rank, digit = divmod(rank, len(SYLLABLES))
        parts.append(SYLLABLES[digit])
    return "".join(parts)


def generate_corpus(path: Path, documents: int, seed: int = 0) -> dict[str, float]:
    """JSONL passages: Zipf(1) word ranks over a 200k vocabulary, lengths log-normal (median ~55 words,
    5..400), a title on 60% of them; written in blocks so memory stays flat."""
    rng = np.random.default_rng(seed)
    words = np.array([pseudo_word(rank) for rank in range(VOCABULARY)], dtype=object)
    cdf = np.cumsum(1.0 / (np.arange(VOCABULARY) + 2.7))
    cdf /= cdf[-1]
    total_words = 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        for first in range(0, documents, GENERATE_BLOCK):
            count = min(GENERATE_BLOCK, documents - first)
            lengths = np.clip(rng.lognormal(np.log(55), 0.45, count).astype(int), 5, 400)
            title_lengths = np.where(rng.random(count) < 0.6, rng.integers(2, 11, count), 0)
            ranks = np.searchsorted(cdf, rng.random(int(lengths.sum() + title_lengths.sum())))
            tokens = words[ranks]
            position = 0
            lines = []
            for offset in range(count):
                title = " ".join(tokens[position : position + title_lengths[offset]])
                position += title_lengths[offset]
                text = " ".join(tokens[position : position + lengths[offset]])
                position += lengths[offset]
                record = {"_id": f"doc{first + offset}", "title": title, "text": text}
                lines.append(json.dumps(record))
            handle.write("\n".join(lines) + "\n")
            total_words += int(lengths.sum() + title_lengths.sum())
    tmp.replace(path)
    return {"documents": documents, "mean_words": total_words / documents, "bytes": path.stat().st_size}


def generate_queries(path: Path, corpus: Path, count: int, seed: int = 1) -> None:
    """Queries of 2-6 words taken from random passages, so every query has lexical matches."""
    rng = np.random.default_rng(seed)
    with open(corpus, encoding="utf-8") as handle:
        sample = [
            json.loads(line)["text"].split() for _, line in zip(range(count * 20), handle, strict=False)
        ]
    picks = rng.choice(len(sample), size=count, replace=False)
    with open(path, "w", encoding="utf-8") as handle:
        for number, pick in enumerate(picks):
            words = sample[pick]
            start = int(rng.integers(0, max(len(words) - 6, 1)))
            text = " ".join(words[start : start + int(rng.integers(2, 7))])
            handle.write(json.dumps({"_id": f"q{number}", "text": text}) + "\n")


def run_stage(stage: str, options: argparse.Namespace) -> dict[str, Any]:
    """The library call of one stage (what `lyre index` / `lyre search` run), in this process."""
    from lyre.basics import progress

    progress.set_quiet(True)
    index = Path(options.index)
    if stage == "ingest":
        from lyre.indexes.ingest import ingest

        return {"documents": ingest(options.corpus, index, overwrite=True).documents}
    if stage == "bm25":
        from lyre.indexes.bm25_stage import bm25_stage

        record = bm25_stage(index)
        return {"vocabulary": record["vocabulary"], "postings": record["postings"]}
    if stage == "encode":
        from lyre.indexes.embeddings import EmbeddingStore
        from lyre.indexes.encode import EncodeOptions, encode_stage

        device = None if options.engine == "ray" else "cpu"
        encode_options = EncodeOptions(embed_model=options.model, engine=options.engine, device=device)
        encoded = encode_stage(index, encode_options)
        report = {**encoded.work, "dim": EmbeddingStore.open(index / "embeddings").spec.dim}
        return {key: report[key] for key in ("documents", "tokens", "tokens_per_second", "dim")}
    if stage == "dense":
        from lyre.indexes.dense_stage import build_dense

        record = build_dense(index, index_type="ivfpq")
        return {key: record[key] for key in ("factory", "nprobe", "refine", "recall")}
    if stage == "search":
        from lyre.retrieval.options import RerankOptions, SearchOptions
        from lyre.retrieval.search_run import search_to_run

        settings, rerank = SearchOptions(mode="hybrid", k=100, depth=100), RerankOptions(rerank_depth=0)
        started = time.perf_counter()
        search_to_run(index, Path(options.queries), Path(options.run), settings, rerank)
        queries = len(Path(options.queries).read_text(encoding="utf-8").splitlines())
        return {"queries": queries, "queries_per_second": round(queries / (time.perf_counter() - started), 1)}
    raise ValueError(stage)


def high_water_mark() -> int:
    """Peak resident bytes of this process since its exec (``VmHWM`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def tree_rss(process: Any) -> int:
    """Resident bytes of ``process`` and all its descendants (0 for those that vanished meanwhile)."""
    import psutil

    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def measure(stage: str, options: argparse.Namespace) -> dict[str, Any]:
    """Run one stage in a fresh child process; wall time, peak RSS (polled tree and self-reported)."""
    import psutil

    command = [sys.executable, __file__, "--stage", stage, "--index", str(options.index),
               "--corpus", str(options.corpus), "--queries", str(options.queries), "--run", str(options.run),
               "--model", str(options.model), "--engine", options.engine]  # fmt: skip
    cores = sorted(os.sched_getaffinity(0))[: options.cpus] if options.cpus else None
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env=options.env,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise SystemExit(f"stage {stage} failed with exit code {child.returncode}")
    report = json.loads(output.strip().splitlines()[-1])
    peak = max(peak, report.pop("self_maxrss_bytes"))
    return {"stage": stage, "seconds": round(seconds, 1), "peak_rss_bytes": peak, **report}


def write_report(path: Path, rows: list[dict[str, Any]], facts: dict[str, Any], bound: int) -> None:
    gib = 1024**3
    lines = [
        f"# lyre at scale: {facts['documents']:,} generated documents, every stage in its own process",
        "",
        f"Command: `{facts['command']}`",
        "",
        f"Machine: {facts['cpus']} CPU cores (load average {facts['load']} at the start, shared with other "
        f"jobs), {facts['memory_gib']:.0f} GiB RAM, Python {platform.python_version()}, no GPU; every stage "
        f"pinned to {facts['pinned'] or 'all'} core(s).",
        f"Corpus: {facts['documents']:,} JSONL passages, {facts['mean_words']:.1f} words on average, "
        f"{facts['corpus_bytes'] / 1e6:,.0f} MB. Queries: {facts['queries']:,}.",
        f"Model: {facts['model_note']}",
        f"Memory bound: every stage's peak RSS (process tree) <= {bound / gib:g} GiB.",
        "",
        "| stage | wall time (s) | peak RSS (MiB) | within bound | details |",
        "|---|---:|---:|:---:|---|",
    ]
    for row in rows:
        details = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("stage", "seconds", "peak_rss_bytes")
        )
        ok = "yes" if row["peak_rss_bytes"] <= bound else "**NO**"
        mib = row["peak_rss_bytes"] / 2**20
        lines.append(f"| {row['stage']} | {row['seconds']:,.1f} | {mib:,.0f} | {ok} | {details} |")
    total = sum(row["seconds"] for row in rows)
    lines += [
        "",
        f"Total: {total / 60:,.1f} min. Index size on disk: {facts['index_bytes'] / 1e6:,.0f} MB.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument(
        "--model", default="tiny", help="tiny (a random 2-layer BERT) or a model folder / hub id"
    )
    parser.add_argument("--engine", default="local", choices=("local", "ray"))
    parser.add_argument("--queries-count", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "scale")
    parser.add_argument("--memory-bound-gib", type=float, default=4.0)
    parser.add_argument("--cpus", type=int, default=0, help="pin every stage to this many cores (0: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale_1m.md")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    for hidden in ("--index", "--corpus", "--queries", "--run"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.stage:
        report = run_stage(options.stage, options)
        report["self_maxrss_bytes"] = high_water_mark()
        print(json.dumps(report))
        return

    work: Path = options.work
    work.mkdir(parents=True, exist_ok=True)
    options.corpus = work / f"corpus-{options.docs}.jsonl"
    options.queries = work / f"queries-{options.queries_count}.jsonl"
    options.index = work / f"index-{options.docs}"
    options.run = work / f"hybrid-{options.docs}.run"
    options.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if options.model == "tiny":
        options.model = save_tiny_bert(work / "tiny-bert", max_length=128)
        model_note = (
            "a random 2-layer, 64-wide BERT with the real MiniLM tokenizer (max 128 tokens): a throughput "
            "and memory measurement of lyre's machinery, not of retrieval quality. Its vectors are nearly "
            "identical, so the tuned IVF-PQ recall (overlap@100 with exact search) says nothing about IVF-PQ "
            "here; benchmarks/ivfpq_1m.py measures recall on structured vectors."
        )
    else:
        model_note = f"{options.model}"
    started = time.perf_counter()
    if not options.corpus.exists():
        facts = generate_corpus(options.corpus, options.docs)
        print(f"generated {options.corpus} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    else:
        facts = {
            "documents": options.docs,
            "bytes": options.corpus.stat().st_size,
            "mean_words": float("nan"),
        }
        with open(options.corpus, encoding="utf-8") as handle:
            sample = [json.loads(line) for _, line in zip(range(10_000), handle, strict=False)]
        facts["mean_words"] = float(np.mean([len(f"{d['title']} {d['text']}".split()) for d in sample]))
    generate_queries(options.queries, options.corpus, options.queries_count)
    shutil.rmtree(options.index, ignore_errors=True)
    load = os.getloadavg()[0]
    bound = int(options.memory_bound_gib * 1024**3)
    rows = []
    import psutil

    report_facts = {
        "documents": options.docs,
        "mean_words": facts["mean_words"],
        "corpus_bytes": facts["bytes"],
        "queries": options.queries_count,
        "cpus": os.cpu_count(),
        "load": f"{load:.1f}",
        "memory_gib": psutil.virtual_memory().total / 1024**3,
        "model_note": model_note,
        "command": " ".join(["python", "benchmarks/scale_1m.py", *sys.argv[1:]]),
        "pinned": options.cpus,
    }
    for stage in STAGES:
        row = measure(stage, options)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
        report_facts["index_bytes"] = folder_bytes(options.index)
        write_report(options.out, rows, report_facts, bound)
    over = [row["stage"] for row in rows if row["peak_rss_bytes"] > bound]
    print(f"wrote {options.out}", file=sys.stderr)
    if over:
        raise SystemExit(f"peak RSS above {options.memory_bound_gib:g} GiB in: {', '.join(over)}")


if __name__ == "__main__":
    main()
