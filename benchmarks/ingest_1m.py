"""Ingest benchmark: generate a 1M-document JSONL corpus, ingest it; peak RSS, docs/s, random access.

Each measurement runs in its own subprocess so the peak RSS is that of the ingest alone (the generator
and the parent do not count). Random access fetches 100 random rows: "cold" is the first fetch after
opening the store (Parquet footers not yet cached), "warm" the median of later fetches of new rows.
A second, larger store (default 10M rows, shorter texts) is written directly with the docstore writer
to show that random access does not grow with the store.

    nice -n 10 python benchmarks/ingest_1m.py            # writes benchmarks/results/ingest_1m.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 13


def generate_corpus(path: Path, docs: int, mean_chars: int) -> None:
    """BEIR-style JSONL: titles of 4-15 words, texts with log-normal lengths around ``mean_chars``."""
    rng = np.random.default_rng(SEED)
    syllables = ["ka", "lo", "mi", "re", "tan", "sul", "vo", "pe", "dri", "on", "as", "ex", "ul", "bi", "zor"]
    vocab = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(30_000)]
    zipf = np.minimum(rng.zipf(1.3, size=4_000_000), len(vocab)) - 1
    pool = " ".join(vocab[i] for i in zipf)
    lengths = np.clip(rng.lognormal(np.log(mean_chars) - 0.18, 0.6, size=docs), 20, 20_000).astype(int)
    starts = rng.integers(0, len(pool) - 20_001, size=docs)
    title_words = rng.integers(4, 16, size=docs)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(docs):
            s = int(starts[i])
            text = pool[s : s + int(lengths[i])]
            title = " ".join(pool[s + 7 : s + 200].split()[: int(title_words[i])])
            out.write(json.dumps({"_id": f"doc{i}", "title": title, "text": text}) + "\n")


CHILD_INGEST = """
import json, resource, sys, time
from lyre.basics import progress
from lyre.indexes.ingest import ingest
progress.set_quiet(True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
report = ingest(sys.argv[1], sys.argv[2], overwrite=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"docs": report.documents, "seconds": seconds, "peak_rss_mb": peak / 1024,
                  "rss_after_imports_mb": before / 1024}))
"""

CHILD_FETCH = """
import json, statistics, sys, time
import numpy as np
import pyarrow.parquet
from lyre.indexes.docstore import DocStore
start = time.perf_counter()
store = DocStore.open(sys.argv[1])
open_ms = (time.perf_counter() - start) * 1000
rng = np.random.default_rng(int(sys.argv[2]))
def timed():
    rows = rng.integers(0, len(store), size=100)
    t = time.perf_counter()
    docs = store.fetch(rows)
    elapsed = (time.perf_counter() - t) * 1000
    assert len(docs) == 100 and docs[0].docid == store.docids_of(rows[:1])[0]
    return elapsed
cold = timed()
warm = [timed() for _ in range(30)]
print(json.dumps({"rows": len(store), "open_ms": open_ms, "cold_ms": cold,
                  "warm_median_ms": statistics.median(warm), "warm_max_ms": max(warm)}))
"""

CHILD_BIG_STORE = """
import sys, time
import numpy as np
from lyre.formats.corpus import UniqueIds
from lyre.indexes.docstore import DocStoreWriter
from lyre.formats.records import Document
rows, folder = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(7)
pool = " ".join(f"w{i}" for i in rng.integers(0, 50_000, size=400_000))
writer = DocStoreWriter(folder)
unique = UniqueIds(writer.docids_of)
batch = 65_536
start = time.perf_counter()
for first in range(0, rows, batch):
    n = min(batch, rows - first)
    offsets = rng.integers(0, len(pool) - 400, size=n)
    docs = [Document(f"d{first + i}", "", pool[o : o + 300]) for i, o in enumerate(offsets.tolist())]
    unique.check([d.docid for d in docs], writer.rows)
    writer.write(docs)
writer.close(unique.sorted_index())
print(time.perf_counter() - start)
"""


def run_child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--mean-chars", type=int, default=600, help="mean text length in chars")
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="big store rows; 0 skips")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lyre-bench-ingest")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest_1m.md")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / f"corpus-{args.docs}.jsonl"
    if not corpus.exists():
        start = time.perf_counter()
        generate_corpus(corpus, args.docs, args.mean_chars)
        print(f"generated {corpus} in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    index = args.work / "index"
    result = run_child(CHILD_INGEST, str(corpus), str(index))
    print("ingest", result, file=sys.stderr)
    store_bytes = folder_size(index / "docstore")
    fetch = run_child(CHILD_FETCH, str(index), "1")
    print("fetch 1M", fetch, file=sys.stderr)
    big_fetch, big_seconds = None, None
    if args.big_rows:
        big = args.work / f"store-{args.big_rows}"
        if not (big / "docstore.json").exists():
            shutil.rmtree(big, ignore_errors=True)
            done = subprocess.run(
                [sys.executable, "-c", CHILD_BIG_STORE, str(args.big_rows), str(big)],
                check=True,
                capture_output=True,
                text=True,
            )
            big_seconds = float(done.stdout.strip())
        big_fetch = run_child(CHILD_FETCH, str(big), "2")
        big_fetch["bytes"] = folder_size(big)
        print("fetch big", big_fetch, file=sys.stderr)

    docs_per_s = result["docs"] / result["seconds"]
    size_mb = corpus.stat().st_size / 1e6
    lines = [
        "# Ingest benchmark (`benchmarks/ingest_1m.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; "
        f"run as `nice -n 10 python benchmarks/ingest_1m.py`, {time.strftime('%Y-%m-%d')}.",
        f"Corpus: {result['docs']:,} generated BEIR-style JSONL documents, {size_mb:,.0f} MB "
        f"(mean text ~{args.mean_chars} chars, log-normal lengths).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| documents ingested | {result['docs']:,} |",
        f"| wall time | {result['seconds']:.1f} s |",
        f"| throughput | {docs_per_s:,.0f} docs/s ({size_mb / result['seconds']:.1f} MB/s) |",
        f"| peak RSS of the ingest process | {result['peak_rss_mb']:,.0f} MB "
        f"(after imports: {result['rss_after_imports_mb']:,.0f} MB) |",
        f"| docstore size (Parquet zstd + id index) | {store_bytes / 1e6:,.0f} MB |",
        f"| open docstore ({fetch['rows']:,} rows) | {fetch['open_ms']:.1f} ms |",
        f"| fetch 100 random rows, cold (first call) | {fetch['cold_ms']:.1f} ms |",
        f"| fetch 100 random rows, warm (median / max of 30) | {fetch['warm_median_ms']:.1f} / "
        f"{fetch['warm_max_ms']:.1f} ms |",
    ]
    if big_fetch:
        made = f", written in {big_seconds:.0f} s" if big_seconds else ""
        lines += [
            f"| larger store: rows ({big_fetch['bytes'] / 1e9:.1f} GB on disk{made}) "
            f"| {big_fetch['rows']:,} |",
            f"| larger store: fetch 100 random rows, cold | {big_fetch['cold_ms']:.1f} ms |",
            f"| larger store: fetch 100 random rows, warm (median / max of 30) | "
            f"{big_fetch['warm_median_ms']:.1f} / {big_fetch['warm_max_ms']:.1f} ms |",
        ]
    lines += [
        "",
        "Peak RSS is `ru_maxrss` of a subprocess that only runs `ingest()`. The corpus is streamed in",
        "4,096-document batches and written in 131,072-row Parquet parts (row groups of 64 rows); what grows",
        "with the corpus is only the duplicate-id index, 16 bytes per document (hash + row; about twice that",
        "during its final sort). Random access cost is per row group touched (~0.2-0.3 ms each in pyarrow),",
        'so it does not grow with the store; "cold" includes reading the Parquet footers of the parts',
        "touched for the first time.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
