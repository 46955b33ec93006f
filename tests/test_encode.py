from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from embed_fixtures import build_tiny_qwen, reference_last_token
from helpers import modules_imported_by
from lyre.basics.errors import LyreError
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.encode import EncodeOptions, encode_stage, slice_of_job
from lyre.indexes.manifest import stage_record
from lyre.indexes.query_encoder import load_index_embedder

DOCS = [
    {"_id": f"d{i}", "title": f"Title {i}", "text": "lorem ipsum " * (i % 7) + f"document {i}"}
    for i in range(24)
]
TEXTS = [f"{doc['title']} {doc['text']}" for doc in DOCS]


def _index(folder: Path) -> Path:
    from lyre.indexes.ingest import ingest

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder.parent / f"{folder.name}-corpus.jsonl"
    corpus.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS), encoding="utf-8")
    ingest(corpus, folder)
    return folder


def _vectors(index: Path) -> np.ndarray:
    return EmbeddingStore.open(index / "embeddings").fetch(np.arange(len(DOCS)))


def test_slice_defaults_from_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name, raising=False)
    assert slice_of_job(None, None) == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    assert slice_of_job(None, None) == (2, 4)
    assert slice_of_job(1, 3) == (1, 3)  # explicit flags win
    with pytest.raises(LyreError, match="both"):
        slice_of_job(1, None)
    with pytest.raises(LyreError):
        slice_of_job(3, 3)


@pytest.mark.slow
def test_encode_stage_matches_the_reference_and_records_the_stage(tmp_path: Path, qwen_folder: Path) -> None:
    index = _index(tmp_path / "index")
    options = EncodeOptions(embed_model=str(qwen_folder), chunk_rows=5, device="cpu")
    report = encode_stage(index, options)
    assert (
        report.record is not None
        and report.work["encoded_chunks"] == 5
        and report.work["documents"] == len(DOCS)
    )
    np.testing.assert_allclose(
        _vectors(index), reference_last_token(qwen_folder, TEXTS), atol=2e-3
    )  # float16
    record = stage_record(index, "embeddings")
    assert record["params"] == report.record.params and record["params"]["dim"] == 64
    assert record["counts"] == {"documents": 24, "chunk_rows": 5, "num_chunks": 5}
    again = encode_stage(index, options)
    assert again.summary.startswith("embeddings: up to date") and again.record == report.record


@pytest.mark.slow
def test_doctor_and_the_index_name_one_recipe(tmp_path: Path, qwen_folder: Path) -> None:
    """`lyre doctor` said recipe X (dim None) where the index recorded recipe Y (dim 64) for the same model
    and settings: the effective recipe carries the model's output dim wherever it is resolved."""
    from lyre.retrieval.doctor import doctor

    index = _index(tmp_path / "index")
    record = encode_stage(index, EncodeOptions(embed_model=str(qwen_folder), device="cpu")).record
    report = doctor(qwen_folder, device="cpu")
    assert report.recipe is not None and report.recipe["dim"] == 64 == record.params["dim"]
    assert report.recipe == record.params["recipe"]
    assert report.recipe_hash == record.params["recipe_hash"]


@pytest.mark.slow
def test_slices_complete_the_stage_only_together(tmp_path: Path, qwen_folder: Path) -> None:
    index = _index(tmp_path / "index")
    options = EncodeOptions(embed_model=str(qwen_folder), chunk_rows=5, slices=2, device="cpu")
    first = encode_stage(index, replace(options, slice_id=0))
    assert first.record is None and EmbeddingStore.open(index / "embeddings").missing_chunks() == [1, 3]
    assert "still missing" in first.summary and stage_record(index, "embeddings") is None
    second = encode_stage(index, replace(options, slice_id=1))
    assert (
        second.record is not None and second.work["encoded_chunks"] == 2 and stage_record(index, "embeddings")
    )
    np.testing.assert_allclose(_vectors(index), reference_last_token(qwen_folder, TEXTS), atol=2e-3)


@pytest.mark.slow
def test_resume_refuses_other_settings_unless_overwrite(tmp_path: Path, qwen_folder: Path) -> None:
    index = _index(tmp_path / "index")
    options = EncodeOptions(embed_model=str(qwen_folder), chunk_rows=5, device="cpu")
    encode_stage(index, replace(options, slice_id=0, slices=2))
    with pytest.raises(LyreError, match="other settings"):
        encode_stage(index, replace(options, dim=32))
    report = encode_stage(index, replace(options, dim=32, overwrite=True))
    assert (
        report.record is not None and report.work["encoded_chunks"] == 5 and _vectors(index).shape == (24, 32)
    )


@pytest.mark.slow
def test_queries_use_the_recorded_recipe(tmp_path: Path, qwen_folder: Path) -> None:
    index = _index(tmp_path / "index")
    encode_stage(
        index,
        EncodeOptions(
            embed_model=str(qwen_folder), chunk_rows=8, device="cpu", query_instruction="Given a claim"
        ),
    )
    got = load_index_embedder(index, device="cpu").encode_queries(["is x true?"])
    expected = reference_last_token(qwen_folder, ["Instruct: Given a claim\nQuery:is x true?"])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    with pytest.raises(LyreError, match="change pooling"):
        load_index_embedder(index, pooling="mean")
    other = build_tiny_qwen(tmp_path / "other", seed=1)
    with pytest.raises(LyreError, match="was encoded with"):
        load_index_embedder(index, model=str(other))


KILLABLE = """
import sys, time
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.encode import EncodeOptions, encode_stage

write = EmbeddingStore.write_chunk
def slow_write(self, *args, **kwargs):
    write(self, *args, **kwargs)
    time.sleep(0.25)  # widen the window between chunks so the parent can kill mid-run
EmbeddingStore.write_chunk = slow_write
encode_stage(sys.argv[1], EncodeOptions(embed_model=sys.argv[2], chunk_rows=3, device="cpu"))
"""


@pytest.mark.slow
def test_kill_9_then_rerun_gives_identical_embeddings(tmp_path: Path, qwen_folder: Path) -> None:
    killed = _index(tmp_path / "killed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, str(killed), str(qwen_folder)], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(list((killed / "embeddings").glob("*.done.json"))) < 2 and time.monotonic() < deadline:
        assert child.poll() is None, "the encoding finished before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = len(list((killed / "embeddings").glob("*.done.json")))
    assert 2 <= done < 8 and stage_record(killed, "embeddings") is None
    options = EncodeOptions(embed_model=str(qwen_folder), chunk_rows=3, device="cpu")
    resumed = encode_stage(killed, options)
    assert resumed.work["encoded_chunks"] == 8 - done and resumed.record is not None

    clean = _index(tmp_path / "clean")
    encode_stage(clean, options)
    for chunk in range(8):
        for suffix in (".npy", ".rows.npy"):
            name = f"chunk-{chunk:06d}{suffix}"
            assert (killed / "embeddings" / name).read_bytes() == (clean / "embeddings" / name).read_bytes()


@pytest.mark.slow
def test_a_moved_model_folder_is_named_at_search_without_offering_another_model(
    tmp_path: Path, qwen_folder: Path
) -> None:
    folder = tmp_path / "my-model"
    shutil.copytree(qwen_folder, folder)
    index = _index(tmp_path / "index")
    encode_stage(index, EncodeOptions(embed_model=str(folder), chunk_rows=8, device="cpu"))
    shutil.rmtree(folder)
    with pytest.raises(LyreError) as error:
        load_index_embedder(index, device="cpu")
    message = str(error.value)
    assert "\n" not in message
    assert f"encoded with {folder}" in message and "no such folder" in message
    assert "huggingface-cli" not in message and "lychee-embed" not in message
    assert "--embed-model MODEL --overwrite`" in message  # how to encode again


@pytest.mark.slow
def test_help_names_the_slice_flags_and_hides_their_former_names() -> None:
    """``--shard-id/--num-shards`` picked a job's slice while a shard is also a Faiss file: renamed, the
    former names are accepted (tests/test_stages.py runs them) but not shown."""
    for command in ("encode", "index"):
        result, _ = modules_imported_by(command, "--help")
        assert "--slice-id" in result.stdout and "--slices" in result.stdout
        assert "--shard-id" not in result.stdout and "--num-shards" not in result.stdout
