"""BM25 at scale: build and search a generated 1M-document corpus; writes benchmarks/results/bm25_1m.md.

The corpus is synthetic but shaped like text: a 300k-word vocabulary drawn Zipf-like (exponent 1.07, the
33 Lucene stopwords as the most frequent words), 60-100 words per document. Documents are generated
batch by batch behind the docstore's ``iter_batches`` interface, so the builder streams them exactly as
it streams a docstore (generation time is measured and subtracted). Build and search run in separate
subprocesses, each reporting its own peak RSS.

    nice -n 10 python benchmarks/bm25_1m.py [--docs 1000000] [--queries 1000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB = 300_000
ZIPF = 1.07
SEED = 13
K = 1000


def vocabulary() -> list[str]:
    """Distinct pseudo-words, most frequent first; the Lucene stopwords take the top ranks."""
    from lyre.indexes.analyzer import LUCENE_ENGLISH_STOPWORDS

    rng = np.random.default_rng(SEED)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = list(LUCENE_ENGLISH_STOPWORDS)
    seen = set(words)
    while len(words) < VOCAB:
        for length in rng.integers(3, 12, size=VOCAB):
            word = "".join(rng.choice(letters, size=length))
            if word not in seen:
                seen.add(word)
                words.append(word)
    return words[:VOCAB]


class GeneratedStore:
    """``n`` generated documents behind the docstore's streaming interface."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.words = np.array(vocabulary(), dtype=object)
        weights = 1.0 / np.arange(1, VOCAB + 1) ** ZIPF
        self.cdf = np.cumsum(weights / weights.sum())
        self.generation_s = 0.0

    def __len__(self) -> int:
        return self.n

    def iter_batches(self, batch_size: int):
        from lyre.formats.records import Document

        rng = np.random.default_rng(SEED + 1)
        for first in range(0, self.n, batch_size):
            start = time.perf_counter()
            count = min(batch_size, self.n - first)
            lengths = rng.integers(60, 101, size=count)
            ids = np.searchsorted(self.cdf, rng.random(int(lengths.sum())))
            ends = np.cumsum(lengths)
            words = self.words[ids]
            docs = [
                Document(str(first + i), "", " ".join(words[end - length : end]))
                for i, (end, length) in enumerate(zip(ends, lengths, strict=True))
            ]
            self.generation_s += time.perf_counter() - start
            yield first, docs


def queries(n: int) -> list[str]:
    """Queries of 2-6 words from the content vocabulary (ranks after the stopwords, Zipf-weighted)."""
    rng = np.random.default_rng(SEED + 2)
    words = vocabulary()[33:]
    weights = 1.0 / np.arange(1, len(words) + 1) ** 0.8
    picks = rng.choice(len(words), size=(n, 6), p=weights / weights.sum())
    return [" ".join(words[i] for i in row[: rng.integers(2, 7)]) for row in picks]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(work: Path, docs: int) -> dict:
    from lyre.basics.progress import set_quiet
    from lyre.indexes.bm25_build import build_bm25

    set_quiet(True)
    store = GeneratedStore(docs)
    start = time.perf_counter()
    record = build_bm25(store, work / "bm25")
    total = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (work / "bm25").iterdir())
    return {
        "docs": record["documents"],
        "vocabulary": record["vocabulary"],
        "postings": record["postings"],
        "avg_doc_len": record["avg_doc_len"],
        "build_s": total - store.generation_s,
        "generation_s": store.generation_s,
        "index_mb": size / 2**20,
        "build_peak_rss_mb": peak_rss_mb(),
    }


def search(work: Path, n: int) -> dict:
    from lyre.basics.progress import set_quiet
    from lyre.indexes.bm25_search import BM25Index

    set_quiet(True)
    start = time.perf_counter()
    index = BM25Index.load(work / "bm25")
    load_s = time.perf_counter() - start
    texts = queries(n)
    cores = os.cpu_count() or 1
    out = {"load_s": load_s, "queries": n, "cores": cores}
    for threads in sorted({1, cores}):
        start = time.perf_counter()
        rows, _ = index.search(texts, K, n_threads=threads)
        out[f"qps_{threads}"] = n / (time.perf_counter() - start)
    out["mean_hits"] = float((rows >= 0).sum(axis=1).mean())
    out["search_peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bm25_1m.md")
    parser.add_argument("--step", choices=("build", "search"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        result = build(args.work, args.docs) if args.step == "build" else search(args.work, args.queries)
        print(json.dumps(result))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="lyre-bm25-1m-"))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    result: dict = {}
    try:
        for step in ("build", "search"):
            command = [sys.executable, __file__, "--step", step, "--work", str(work)]
            command += ["--docs", str(args.docs), "--queries", str(args.queries)]
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    cores = result["cores"]
    rows = [
        ("documents", f"{result['docs']:,}"),
        ("vocabulary (terms after stopping/stemming)", f"{result['vocabulary']:,}"),
        ("postings", f"{result['postings']:,}"),
        ("average terms per document", f"{result['avg_doc_len']:.1f}"),
        ("build time (analysis + scoring + write, generation excluded)", f"{result['build_s']:.1f} s"),
        ("corpus generation time (excluded above)", f"{result['generation_s']:.1f} s"),
        ("build peak RSS", f"{result['build_peak_rss_mb']:,.0f} MB"),
        ("index size on disk", f"{result['index_mb']:,.0f} MB"),
        ("load time (memory-mapped)", f"{result['load_s']:.2f} s"),
        (f"queries/s, top-{K}, 1 thread", f"{result['qps_1']:,.0f}"),
        (f"queries/s, top-{K}, {cores} threads", f"{result[f'qps_{cores}']:,.0f}"),
        ("mean hits per query", f"{result['mean_hits']:.0f}"),
        ("search peak RSS", f"{result['search_peak_rss_mb']:,.0f} MB"),
    ]
    from lyre.basics.atomic import write_text_atomic

    text = (
        f"# BM25 on a generated {result['docs']:,}-document corpus\n\n"
        f"`nice -n 10 python benchmarks/bm25_1m.py --docs {args.docs} --queries {args.queries}` on {cores} "
        "cores (shared machine). Default analyzer and parameters (k1=0.9, b=0.4, lucene).\n\n"
        "| measure | value |\n|---|---:|\n"
        + "\n".join(f"| {name} | {value} |" for name, value in rows)
        + "\n"
    )
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
