"""Rocchio on dense vectors: the query vector moved toward the mean of its top documents' vectors.

Li, Mourad, Zhuang, Koopman and Zuccon, "Pseudo Relevance Feedback with Deep Language Models and Dense
Retrievers: Successes and Pitfalls" (arXiv 2108.11044, 2021): ``q' = alpha * q + beta * mean(d_1..d_k)``
over the first search's top ``k`` document vectors, then a second search with ``q'`` through the same
index. No renormalisation: Pyserini's ``DenseVectorRocchioPrf`` searches ``q'`` as it is (an inner-product
index ranks by it either way). Defaults ``k = 5, alpha = 0.4, beta = 0.6``: the setting of Pyserini's
vector-PRF reproduction of the paper ("Rocchio PRF 5 A0.4 B0.6").

The document vectors are the index's stored embeddings (float16 chunks, read as float32), so the mean is
over exactly what the index searched; on a passage index they are the passages'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def move(query: np.ndarray, documents: np.ndarray, settings: Mapping[str, Any]) -> np.ndarray:
    """One query's moved vector (float32) from its float32 vector and its top documents' vectors
    ([k, dim], best first; none found leaves ``alpha * q``), computed in float64."""
    moved = settings["dense_prf_alpha"] * query.astype(np.float64)
    if len(documents):
        moved += settings["dense_prf_beta"] * documents.astype(np.float64).mean(axis=0)
    return moved.astype(np.float32)
