"""What the benchmarks share: where the data is, the lychee model shape, and how GPU work is counted.

Data: ``--data`` defaults to ``$LYRE_DATA`` (set by the GPU bundle's run.sh), else the shared data folder
next to the repository (``<repo>/../shared/data``), which holds BEIR folders such as ``scifact/``.

FLOPs (docs/gpu-facts.md): per token, 2 x non-embedding parameters plus causal attention,
4 x layers x hidden x length / 2, where length is the token's sequence length; so a sequence of length L
costs L x 2P + 4 x layers x hidden x L^2 / 2. This is the useful work: padding, and attention between
packed neighbours that a mask throws away, count for nothing. Fraction of peak = FLOPs / seconds / peak.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: lychee-embed / lychee-rerank: the Qwen2.5-1.5B shape (random weights of it measure speed exactly).
LYCHEE_CONFIG: dict[str, Any] = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1e6,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}

#: Dense bf16 peak (TFLOP/s, no sparsity) by GPU name fragment; --peak-tflops overrides.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def default_data() -> Path:
    """``$LYRE_DATA``, else ``<repo>/../shared/data``: the folder holding the BEIR collections."""
    return Path(os.environ.get("LYRE_DATA") or REPO.parent / "shared" / "data")


def non_embedding_parameters(model: Any) -> int:
    """Parameters outside the token embedding (a tied output layer shares it and is not counted)."""
    return sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)


def forward_flops(lengths: Iterable[int], parameters: int, layers: int, hidden: int) -> float:
    """Useful FLOPs of one forward pass over sequences of these lengths (see the module docstring)."""
    return float(sum(2 * parameters * n + 4 * layers * hidden * n * n / 2 for n in lengths))


def peak_tflops(device_name: str, override: float | None) -> float | None:
    return override or next((value for key, value in BF16_PEAK_TFLOPS.items() if key in device_name), None)


def describe_rate(flops: float, seconds: float, peak: float | None) -> str:
    """'N TFLOP/s = x% of P TFLOP/s bf16 dense peak' (or the rate alone when the peak is unknown)."""
    achieved = flops / seconds / 1e12
    if not peak:
        return f"{achieved:.0f} TFLOP/s (unknown peak: pass --peak-tflops)"
    return f"{achieved:.0f} TFLOP/s = {achieved / peak:.1%} of the {peak:.0f} TFLOP/s bf16 dense peak"


class PositionCounter:
    """Counts the token positions a model really computes (its input embedding's input sizes): against
    the real tokens it shows the padding overhead of whatever batching path the caller takes."""

    def __init__(self, model: Any) -> None:
        self.calls = 0
        self.positions = 0
        self.widest = 0
        self._handle = model.get_input_embeddings().register_forward_hook(self._seen)

    def _seen(self, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ids = inputs[0]
        self.calls += 1
        self.positions += int(ids.numel())
        self.widest = max(self.widest, int(ids.shape[-1]))

    def remove(self) -> None:
        self._handle.remove()

    def describe(self, real_tokens: int) -> str:
        overhead = self.positions / max(real_tokens, 1) - 1
        return (
            f"{self.calls} forward calls computed {self.positions:,} positions for {real_tokens:,} real "
            f"tokens ({overhead:.1%} padding), widest row {self.widest}"
        )


def device_name(device: str) -> str:
    """The GPU's name, or the processor's for a CPU run of a GPU section (a check of its code)."""
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}; a check of the code, not a GPU number)"


def synchronize(device: str) -> None:
    """Wait for the device's queued work (timings must not stop before the GPU does)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def reset_peak_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> str:
    """'peak GPU memory N GiB' since the last reset, or nothing on the CPU."""
    import torch

    if not device.startswith("cuda"):
        return "peak GPU memory: not a GPU"
    return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
