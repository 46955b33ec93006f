"""lyre's BM25 against rank-bm25 (BM25Okapi) and plain bm25s, side by side, on SciFact and NFCorpus.

Every system gets the same tokens (lyre's saved analyzer: Lucene-like words, Lucene stopwords, Porter)
and k1=0.9, b=0.4; bm25s and lyre use Lucene scoring, BM25Okapi its own Robertson idf. Each
(dataset, system) runs in its own subprocess so its peak RSS is its own. Index time includes analysis;
queries/s includes query analysis and top-1000 selection. Documents are streamed from memory.

    python benchmarks/bm25_peers.py [--data ../shared/data] [--out benchmarks/results/bm25_peers.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import default_data

DATASETS = ("scifact", "nfcorpus")
SYSTEMS = ("lyre", "bm25s", "rank-bm25")
K = 1000


def read_beir(folder: Path) -> tuple[list, list, dict[str, dict[str, int]]]:
    from lyre.formats.records import Document, Query

    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            qid, docid, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[docid] = int(score)
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        docs = [
            Document(str(o["_id"]), o.get("title", ""), o.get("text", "")) for o in map(json.loads, handle)
        ]
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = [Query(o["_id"], o["text"]) for o in map(json.loads, handle) if o["_id"] in qrels]
    return docs, queries, qrels


class ListStore:
    """The docstore's streaming interface over documents in memory."""

    def __init__(self, docs: list) -> None:
        self.docs = docs

    def __len__(self) -> int:
        return len(self.docs)

    def iter_batches(self, batch_size: int):
        for first in range(0, len(self.docs), batch_size):
            yield first, self.docs[first : first + batch_size]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_lyre(docs, texts, threads):
    from lyre.indexes.bm25_build import build_bm25
    from lyre.indexes.bm25_search import BM25Index

    results = {}
    with tempfile.TemporaryDirectory(prefix="lyre-bm25-") as folder:
        _, index_s = timed(build_bm25, ListStore(docs), Path(folder) / "bm25")
        index = BM25Index.load(Path(folder) / "bm25")
        for n in threads:
            (rows, scores), seconds = timed(index.search, texts, K, n_threads=n)
            results[n] = seconds
    return index_s, results, [(r[r >= 0], s[r >= 0]) for r, s in zip(rows, scores, strict=True)]


def run_bm25s(docs, texts, threads):
    import bm25s
    from lyre.formats.records import document_text
    from lyre.indexes.analyzer import Analyzer

    analyzer = Analyzer()

    def build():
        engine = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
        engine.index([analyzer.analyze(document_text(d)) for d in docs], show_progress=False)
        return engine

    engine, index_s = timed(build)

    def search(n):
        # bm25s' own "" token for empty queries points past its matrix (ValueError); an empty list works
        tokens = [[t for t in analyzer.analyze(q) if t in engine.vocab_dict] for q in texts]
        return engine.retrieve(tokens, k=K, n_threads=n if n > 0 else -1, show_progress=False)

    results = {}
    for n in threads:
        (rows, scores), seconds = timed(search, n)
        results[n] = seconds
    return index_s, results, [(r[s > 0], s[s > 0]) for r, s in zip(rows, scores, strict=True)]


def run_rank_bm25(docs, texts, threads):
    import numpy as np
    from lyre.formats.records import document_text
    from lyre.indexes.analyzer import Analyzer
    from rank_bm25 import BM25Okapi

    analyzer = Analyzer()
    engine, index_s = timed(
        lambda: BM25Okapi([analyzer.analyze(document_text(d)) for d in docs], k1=0.9, b=0.4)
    )

    def search():
        out = []
        for text in texts:
            scores = engine.get_scores(analyzer.analyze(text))
            top = np.argpartition(-scores, K - 1)[:K]
            top = top[np.argsort(-scores[top], kind="stable")]
            out.append((top[scores[top] > 0], scores[top][scores[top] > 0]))
        return out

    out, seconds = timed(search)
    return index_s, {1: seconds}, out


def worker(data: Path, dataset: str, system: str, threads: list[int]) -> dict:
    import ir_measures
    from ir_measures import nDCG
    from lyre.basics.progress import set_quiet

    set_quiet(True)

    docs, queries, qrels = read_beir(data / dataset)
    texts = [q.text for q in queries]
    runner = {"lyre": run_lyre, "bm25s": run_bm25s, "rank-bm25": run_rank_bm25}[system]
    index_s, search_s, hits = runner(docs, texts, threads)
    run = {
        q.qid: {docs[int(r)].docid: float(s) for r, s in zip(rows, scores, strict=True)}
        for q, (rows, scores) in zip(queries, hits, strict=True)
    }
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    return {
        "dataset": dataset,
        "system": system,
        "docs": len(docs),
        "queries": len(queries),
        "index_s": index_s,
        "qps": {str(n): len(queries) / s for n, s in search_s.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ndcg10": ndcg,
    }


def table(rows: list[dict], cores: int) -> str:
    lines = [
        f"| dataset | system | index s | q/s 1 thread | q/s {cores} threads | peak RSS MB | nDCG@10 | "
        "q/s vs rank-bm25 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = next(r for r in rows if r["dataset"] == row["dataset"] and r["system"] == "rank-bm25")
        all_threads = row["qps"].get(str(cores))
        lines.append(
            f"| {row['dataset']} | {row['system']} | {row['index_s']:.2f} | {row['qps']['1']:,.0f} | "
            + (f"{all_threads:,.0f}" if all_threads else "n/a (single-threaded)")
            + f" | {row['peak_rss_mb']:.0f} | {row['ndcg10']:.4f}"
            + f" | {row['qps']['1'] / base['qps']['1']:.0f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=default_data(), help="folder holding the BEIR sets")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bm25_peers.md")
    parser.add_argument("--worker", nargs=2, metavar=("DATASET", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.worker:
        print(json.dumps(worker(args.data, *args.worker, threads=[1, cores])))
        return
    rows = []
    env = {**os.environ, "DISABLE_TQDM": "1", "TQDM_DISABLE": "1"}
    for dataset in DATASETS:
        for system in SYSTEMS:
            command = [sys.executable, __file__, "--data", str(args.data), "--worker", dataset, system]
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    from lyre.basics.atomic import write_text_atomic

    header = (
        f"# BM25: lyre vs bm25s vs rank-bm25\n\n`python benchmarks/bm25_peers.py` on {cores} cores "
        "(shared machine), top-1000 per query, test queries; same analyzer tokens for all, k1=0.9 b=0.4. "
        "rank-bm25 has no threads; its q/s is over all test queries at one thread.\n\n"
    )
    write_text_atomic(args.out, header + table(rows, cores) + "\n")
    print(table(rows, cores))


if __name__ == "__main__":
    main()
