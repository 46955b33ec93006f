"""The encode engines behind one runner: the one-process-per-device engine, run with CPU workers, writes
exactly the chunks the in-process engine writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.progress import Counts
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.encode import EncodeOptions, encode_stage
from lyre.indexes.encode_job import EncodeJob
from lyre.indexes.encode_runners import DeviceProcessRunner, InProcessRunner, RayRunner, runner_for
from lyre.indexes.ingest import ingest
from lyre.models.engines import visible_gpus
from lyre.models.recipes import EmbedRecipe

CHUNK_ROWS = 16  # 70 documents -> 5 chunks, the last one short


@pytest.fixture(scope="module")
def corpus(corpus70: Path) -> Path:
    return corpus70


@pytest.fixture(scope="module")
def in_process_index(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_bert: Path) -> Path:
    """The reference: the local engine in this process."""
    index = tmp_path_factory.mktemp("local") / "index"
    ingest(corpus, index)
    options = EncodeOptions(embed_model=str(tiny_bert), chunk_rows=CHUNK_ROWS, device="cpu")
    encode_stage(index, options)
    return index


def job_for_a_fresh_index(tmp_path: Path, corpus: Path, reference: Path, model: Path) -> EncodeJob:
    """A new index with the reference's (empty) embedding store: every chunk still to encode."""
    index = tmp_path / "index"
    ingest(corpus, index)
    spec = EmbeddingStore.open(reference / "embeddings").spec
    EmbeddingStore.create_or_resume(index / "embeddings", spec)
    return EncodeJob(index, model, EmbedRecipe.from_dict(spec.recipe), tuple(range(spec.num_chunks)))


@pytest.mark.slow
def test_two_cpu_worker_processes_write_the_in_process_chunks_byte_for_byte(
    in_process_index: Path, corpus: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    job = job_for_a_fresh_index(tmp_path, corpus, in_process_index, tiny_bert)
    relayed = Counts()
    DeviceProcessRunner(devices=["cpu", "cpu"]).run(job, relayed)
    assert relayed.done_items == relayed.tokenized_items == 70  # each chunk encoded once, by one worker
    store = EmbeddingStore.open(job.index_dir / "embeddings")
    reference = EmbeddingStore.open(in_process_index / "embeddings")
    assert store.missing_chunks() == []
    for chunk in job.chunks:
        assert store.vectors_path(chunk).read_bytes() == reference.vectors_path(chunk).read_bytes()
        assert store.rows_path(chunk).read_bytes() == reference.rows_path(chunk).read_bytes()
    assert relayed.done_tokens == relayed.tokenized_tokens > 0


@pytest.mark.slow
def test_a_worker_error_comes_back_as_its_one_line(
    in_process_index: Path, corpus: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    gone = tmp_path / "moved-model"
    shutil.copytree(tiny_bert, gone)
    job = job_for_a_fresh_index(tmp_path, corpus, in_process_index, gone)
    shutil.rmtree(gone)
    with pytest.raises(LyreError, match="not available locally") as error:
        DeviceProcessRunner(devices=["cpu", "cpu"]).run(job, Counts())
    assert "\n" not in str(error.value)
    assert EmbeddingStore.open(job.index_dir / "embeddings").missing_chunks() == list(job.chunks)


@pytest.mark.slow
def test_a_dying_worker_is_one_line_that_says_how_to_resume(
    in_process_index: Path, corpus: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_bert, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    job = job_for_a_fresh_index(tmp_path, corpus, in_process_index, broken)
    dead = r"^encoding worker on cpu died \(exit code 1\); rerun the same command"
    with pytest.raises(LyreError, match=dead):
        DeviceProcessRunner(devices=["cpu"]).run(job, Counts())


def test_engines_by_name() -> None:
    assert runner_for("local", device="cpu") == InProcessRunner(device="cpu")
    assert runner_for("ray", ray_address="head:6379") == RayRunner(address="head:6379")
    if visible_gpus() == 0:
        assert runner_for("local", chunks=8) == InProcessRunner()  # no GPUs to spread over
        with pytest.raises(OptionError, match="no CUDA GPU"):
            runner_for("gpus")
    with pytest.raises(OptionError, match="use one of local, gpus, ray"):
        runner_for("slurm")
