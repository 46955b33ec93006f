"""Load on ``lyre serve``: queries per second and latency at 1, 8 and 32 concurrent clients, per mode,
beside batch search of the same queries with the same settings, measured in the same run.

- **Batch**: the queries searched at once by :meth:`retrieval.plan.SearchPlan.search`, models loaded
  beforehand and timed apart: exactly what ``lyre search`` runs between loading and writing the run (no
  cache, no reranking).
- **Served**: a real ``lyre serve`` process (``--no-cache --rerank-depth 0``, every mode loaded), asked by
  N client threads of this process over keep-alive HTTP connections; each client takes the next query
  until every query was asked ``--rounds`` times. q/s = requests / wall seconds; latency per request.
  Each answer is the full JSON a page gets (titles, snippets, side ranks).
- Each (mode, clients) is measured ``--repeat`` times, batch and served in turn, and the best of each is
  kept: on a shared machine a neighbour's burst slows one measurement, never speeds one up, and batch and
  served meet the same neighbours.
- **Equal hits**: served hits (ids and scores, in order) equal to the batch run's, query by query, at
  the highest client count (concurrent requests, micro-batched).

Usage: ``python benchmarks/serve_load.py --index INDEX --queries QUERIES [--qrels QRELS] [--k 10]
[--clients 1,8,32] [--modes bm25,dense,hybrid] [--rounds 1] [--repeat 3] [--out FILE]``. Writes
``benchmarks/results/serve_load.md`` by default.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serve_load.md"


def read_queries(path: Path, qrels: Path | None) -> list[tuple[str, str]]:
    from lyre.formats.qrels import read_qrels
    from lyre.formats.queries import read_queries as read

    judged = {qrel.qid for qrel in read_qrels(qrels)} if qrels else None
    return [(query.qid, query.text) for query in read(path, only_ids=judged)]


class BatchSearch:
    """One mode's plan, opened as ``lyre search`` opens it (under the index's read lock, beside the
    server's), timed on all queries at once."""

    def __init__(self, index: Path, queries: list[tuple[str, str]], mode: str, k: int) -> None:
        from lyre.formats.records import Query
        from lyre.indexes.manifest import PASSAGES
        from lyre.indexes.open_index import open_for_search
        from lyre.retrieval.options import RerankOptions, SearchOptions
        from lyre.retrieval.plan import SearchPlan, needed_stages

        self.asked = [Query(qid, text) for qid, text in queries]
        self.held = contextlib.ExitStack()
        opened = self.held.enter_context(open_for_search(index, needed_stages(mode), if_built=(PASSAGES,)))
        options, rerank = SearchOptions(mode=mode, k=k), RerankOptions(rerank_depth=0)
        self.plan = SearchPlan.open(index, options, rerank, None, opened=opened)
        self.plan.search(self.asked[:8])  # warm: first calls of torch and faiss

    def timed(self) -> tuple[float, dict[str, list[tuple[str, float]]]]:
        """Seconds of one search of every query, and each query's hits ((docid, score) in order)."""
        from lyre.formats.runs import ranked_columns

        started = time.perf_counter()
        run = self.plan.search(self.asked)
        seconds = time.perf_counter() - started
        return seconds, {
            q.qid: list(zip(*ranked_columns(run.get(q.qid, {})), strict=True)) for q in self.asked
        }

    def close(self) -> None:
        self.held.close()


class Server:
    """``lyre serve`` in a subprocess, until :meth:`stop`."""

    def __init__(self, index: Path, k: int) -> None:
        self.argv = [sys.executable, "-m", "lyre", "-q", "serve", "--index", str(index), "--port", "0",
                     "--no-cache", "--rerank-depth", "0", "--k", str(max(k, 10))]  # fmt: skip
        self.process = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("ready: "):
            self.process.kill()
            raise SystemExit(f"lyre serve did not start: {line!r}")
        self.url = urlsplit(line.removeprefix("ready: "))

    def command(self) -> str:
        return "lyre " + shlex.join(self.argv[3:])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def load(
    server: Server, queries: list[tuple[str, str]], mode: str, k: int, clients: int, rounds: int
) -> dict[str, Any]:
    """Every query asked ``rounds`` times by ``clients`` threads: q/s, latencies, each query's last hits."""
    order = [query for _ in range(rounds) for query in queries]
    taken = iter(range(len(order)))
    lock = threading.Lock()
    latencies: list[float] = []
    answers: dict[str, list[tuple[str, float]]] = {}
    failures: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection(server.url.hostname, server.url.port, timeout=300)
        while True:
            with lock:
                position = next(taken, None)
            if position is None:
                break
            qid, text = order[position]
            started = time.perf_counter()
            connection.request("GET", "/api/search?" + urlencode({"q": text, "k": k, "mode": mode}))
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    failures.append(f"{qid}: {response.status} {body[:200]!r}")
                else:
                    answers[qid] = [(hit["docid"], hit["score"]) for hit in json.loads(body)["hits"]]
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "qps": len(order) / wall,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "answers": answers,
        "failures": failures,
        "requests": len(order),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="A hybrid (BM25 + dense) lyre index.")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, default=None, help="Keep only the queries judged here.")
    parser.add_argument("--k", type=int, default=10, help="Hits per query.")
    parser.add_argument("--clients", default="1,8,32", help="Comma-separated client counts.")
    parser.add_argument("--modes", default="bm25,dense,hybrid")
    parser.add_argument("--rounds", type=int, default=1, help="Times each query is asked per measurement.")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="Measurements of each (mode, clients), batch and served in turn.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    queries = read_queries(args.queries, args.qrels)
    modes = args.modes.split(",")
    counts = [int(count) for count in args.clients.split(",")]

    server = Server(args.index, args.k)
    batches: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
    loads: dict[tuple[str, int], dict[str, Any]] = {}
    loads_average = []
    try:
        for mode in modes:
            searcher = BatchSearch(args.index, queries, mode, args.k)
            load(server, queries[:16], mode, args.k, 4, 1)  # warm: the first request of a mode
            for count in counts:
                for _ in range(args.repeat):  # batch and served in turn: both meet the same neighbours
                    timed = searcher.timed()
                    if (mode, count) not in batches or timed[0] < batches[mode, count][0]:
                        batches[mode, count] = timed
                    measured = load(server, queries, mode, args.k, count, args.rounds)
                    if (mode, count) not in loads or measured["qps"] > loads[mode, count]["qps"]:
                        loads[mode, count] = measured
                    loads_average.append(os.getloadavg()[0])
            searcher.close()
    finally:
        server.stop()

    rows = [
        "| mode | batch q/s | clients | served q/s | of batch | p50 ms | p99 ms | p99 / p50 | equal hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for mode in modes:
        for count in counts:
            seconds, expected = batches[mode, count]
            batch_qps = len(queries) / seconds
            measured = loads[mode, count]
            equal = sum(
                [(docid, score) for docid, score in measured["answers"].get(qid, [])] == expected[qid]
                for qid, _ in queries
            )
            shown_equal = f"{equal}/{len(queries)}" if count == counts[-1] else ""
            qps, p50, p99 = measured["qps"], measured["p50"], measured["p99"]
            rows.append(
                f"| {mode} | {batch_qps:.0f} | {count} | {qps:.0f} | {qps / batch_qps:.0%} "
                f"| {p50 * 1000:.1f} | {p99 * 1000:.1f} | {p99 / p50:.1f} | {shown_equal} |"
            )
            if measured["failures"]:
                raise SystemExit(
                    f"{len(measured['failures'])} failed requests, e.g. {measured['failures'][:3]}"
                )
        top = loads[mode, counts[-1]]
        verdicts.append(
            f"- {mode} at {counts[-1]} clients: {top['qps'] / batch_qps:.0%} of batch throughput "
            f"(goal for hybrid >= 50%), p99 {top['p99'] / top['p50']:.1f}x p50 (goal < 10x)"
        )
    command = "python benchmarks/serve_load.py " + shlex.join(
        ["--index", str(args.index), "--queries", str(args.queries)]
        + (["--qrels", str(args.qrels)] if args.qrels else [])
        + ["--k", str(args.k), "--clients", args.clients, "--modes", args.modes, "--rounds", str(args.rounds)]
        + ["--repeat", str(args.repeat)]
    )
    import torch

    report = [
        "# `lyre serve` under load",
        "",
        f"Command: `{command}`",
        "",
        f"Server: `{server.command()}`",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores (shared: load average "
        f"{min(loads_average):.1f} to {max(loads_average):.1f} while serving), torch {torch.__version__} on "
        f"CPU with {torch.get_num_threads()} threads; {len(queries)} queries, k = {args.k}, each asked "
        f"{args.rounds} time(s) per measurement; the clients run in the benchmark's process, beside the "
        "server.",
        "",
        *rows,
        "",
        *verdicts,
        "",
        "Batch: all queries in one `SearchPlan.search` (what `lyre search` runs), models loaded. Served: the "
        "whole request (HTTP, JSON, titles, snippets, side ranks). Each row: the best of "
        f"{args.repeat} measurements, batch and served in turn. Equal hits: queries whose served hits "
        "(ids, order, scores) equal the batch run's, at the highest client count.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n", encoding="utf-8")
    print("\n".join(report))


if __name__ == "__main__":
    main()
