"""Long documents: how long they are before splitting, and what splitting them into passages costs.

Builds (once) the long-document collection of issue 14 with the shared tool ``make_long_corpus.py`` (each
document of BASE hidden among filler passages of FILLER), reports its lengths in words and in the
model's tokens, then streams the whole collection through lyre's token splitter (the model's own
tokenizer, ``N`` tokens including title and special tokens, stride ``S``) and the word splitter, timing
each and reporting passages per document and peak memory. Every path is an option:

    nice -n 10 python benchmarks/long_documents.py --tool ../shared/tools/make_long_corpus.py \\
        --base ../shared/data/scifact --filler ../shared/data/nfcorpus --work /tmp/long \\
        --passage-tokens 256 --passage-stride 192 [--results benchmarks/results/long_documents.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from formats.corpus import open_corpus
from indexes.passages import SplitStats, Splitter, TokenSplitter, WordSplitter, split_documents

MIB = 1 << 20


def rss_now() -> int:
    """Resident memory of this process now, in bytes (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_peak() -> int:
    """Peak resident memory of this process so far, in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_collection(tool: Path, base: Path, filler: Path, work: Path) -> Path:
    """The long collection in ``work`` (made by the shared tool unless already there)."""
    if not (work / "corpus.jsonl").is_file():
        subprocess.run([sys.executable, str(tool), str(base), str(filler), str(work)], check=True)
    return work


def time_split(corpus: Path, splitter: Splitter) -> tuple[SplitStats, float, int, int]:
    """Stream the corpus through ``splitter``: (statistics, seconds, RSS before, peak RSS after)."""
    stats = SplitStats(splitter.unit, splitter.limit)
    before = rss_now()
    started = time.perf_counter()
    passages = 0
    for _ in split_documents(iter(open_corpus(corpus)), splitter, stats):
        passages += 1
    seconds = time.perf_counter() - started
    assert passages == stats.passages
    return stats, seconds, before, rss_peak()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool", type=Path, required=True, help="make_long_corpus.py")
    parser.add_argument("--base", type=Path, required=True, help="BEIR folder whose documents are kept")
    parser.add_argument("--filler", type=Path, required=True, help="BEIR folder giving the filler text")
    parser.add_argument("--work", type=Path, required=True, help="folder for the long collection")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--passage-tokens", type=int, default=256)
    parser.add_argument("--passage-stride", type=int, default=192)
    parser.add_argument("--passage-words", type=int, default=150, help="word windows (BM25-only indexes)")
    parser.add_argument("--word-stride", type=int, default=75)
    parser.add_argument("--results", type=Path, help="also write the report here (markdown)")
    args = parser.parse_args()

    corpus = build_collection(args.tool, args.base, args.filler, args.work) / "corpus.jsonl"
    started = time.perf_counter()
    tokens = TokenSplitter.for_model(args.model, args.passage_tokens, args.passage_stride)
    load_seconds = time.perf_counter() - started
    words = WordSplitter(args.passage_words, args.word_stride)
    rows = []
    for name, splitter in (("tokens", tokens), ("words", words)):
        stats, seconds, before, peak = time_split(corpus, splitter)
        rows.append((name, splitter.settings(), stats, seconds, before, peak))

    lines = [
        "# Long documents: lengths before splitting, and splitting cost",
        "",
        f"Collection: `make_long_corpus.py {args.base.name} {args.filler.name}` (seed 0, 3 fillers), "
        f"model `{args.model}` (tokenizer loaded in {load_seconds:.1f} s). Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, Python {platform.python_version()}; one process, tokenizer threads "
        "as the tokenizers library chooses.",
        "",
        "| windows | documents | passages | per doc mean / max | length mean / p50 / p95 / max | longer "
        "than limit | split time | docs/s | RSS before -> peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, settings, stats, seconds, before, peak in rows:
        s = stats.summary()
        window = f"{name} N={settings['size']} S={settings['stride']}"
        lines.append(
            f"| {window} | {s['documents']:,} | {s['passages']:,} | {s['passages_per_document_mean']:.2f} / "
            f"{s['passages_per_document_max']} | {s['length_mean']:.0f} / {s['length_p50']:.0f} / "
            f"{s['length_p95']:.0f} / {s['length_max']:,} {s['length_unit']} | {s['longer_than_limit']:.1%} "
            f"of > {s['length_limit']} | {seconds:.1f} s | {s['documents'] / seconds:,.0f} | "
            f"{before / MIB:.0f} -> {peak / MIB:.0f} MiB |"
        )
    lines += ["", *(f"- {name}: {stats.describe()}" for name, _, stats, *_ in rows)]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
