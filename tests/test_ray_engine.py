import logging
import os
from pathlib import Path

import numpy as np
import pytest
from lyre.basics.errors import LyreError
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.encode import EncodeOptions, encode_stage
from lyre.indexes.encode_runners import ChunkEncoder
from lyre.indexes.ingest import ingest
from lyre.indexes.manifest import stage_record
from lyre.indexes.stages import StageResult
from lyre.models.engines.ray_cluster import ActorPlan, plan_actors

ray = pytest.importorskip("ray")

CHUNK_ROWS = 16  # 70 documents -> 5 chunks, the last one short


def test_one_actor_per_gpu_holding_one_gpu() -> None:
    plan = plan_actors({"GPU": 4.0, "CPU": 64.0}, [32.0, 32.0], chunks=100, cpu_actors=None)
    assert plan == ActorPlan(count=4, device="cuda", num_gpus=1, num_cpus=1)


def test_no_more_actors_than_chunks() -> None:
    assert plan_actors({"GPU": 8.0, "CPU": 8.0}, [8.0], chunks=3, cpu_actors=None).count == 3


def test_cpu_cluster_gets_one_actor_per_node_sized_by_the_smallest_node() -> None:
    plan = plan_actors({"CPU": 24.0}, [16.0, 8.0], chunks=100, cpu_actors=None)
    assert plan == ActorPlan(count=2, device="cpu", num_gpus=0, num_cpus=8)


def test_cpu_actors_split_the_cores_and_never_exceed_them() -> None:
    assert plan_actors({"CPU": 8.0}, [8.0], chunks=100, cpu_actors=3) == ActorPlan(3, "cpu", 0, 2)
    assert plan_actors({"CPU": 2.0}, [2.0], chunks=100, cpu_actors=5) == ActorPlan(2, "cpu", 0, 1)


def test_bad_cpu_actor_count_is_a_one_line_error() -> None:
    with pytest.raises(LyreError, match="ray_cpu_actors 0"):
        plan_actors({"CPU": 2.0}, [2.0], chunks=1, cpu_actors=0)


@pytest.fixture(scope="module")
def local_ray() -> object:
    """One local Ray for the module (startup costs seconds); the engine joins it instead of starting one."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(corpus70: Path) -> Path:
    return corpus70


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_bert: Path) -> Path:
    """The reference: the local engine, one process, no Ray."""
    index = tmp_path_factory.mktemp("local") / "index"
    ingest(corpus, index)
    encode_stage(index, EncodeOptions(embed_model=str(tiny_bert), chunk_rows=CHUNK_ROWS, device="cpu"))
    return index


def on_ray(index: Path, model: Path, **options: int) -> StageResult:
    """The encode stage with the Ray engine (two CPU actors unless said otherwise)."""
    return encode_stage(
        index,
        EncodeOptions(
            embed_model=str(model), chunk_rows=CHUNK_ROWS, engine="ray", **{"ray_cpu_actors": 2, **options}
        ),
    )


def fresh_index(tmp_path: Path, corpus: Path) -> Path:
    ingest(corpus, tmp_path / "index")
    return tmp_path / "index"


def all_chunks(index: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(EmbeddingStore.open(index / "embeddings").iter_chunks())


@pytest.mark.slow
def test_ray_embeddings_equal_local_ones(local_ray, local_index, corpus, tiny_bert, tmp_path) -> None:
    index = fresh_index(tmp_path, corpus)
    report = on_ray(index, tiny_bert)
    assert report.record is not None and report.work["encoded_chunks"] == 5 and report.work["documents"] == 70
    assert (
        EmbeddingStore.open(index / "embeddings").spec == EmbeddingStore.open(local_index / "embeddings").spec
    )
    for (rows, vectors), (local_rows, local_vectors) in zip(
        all_chunks(index), all_chunks(local_index), strict=True
    ):
        np.testing.assert_array_equal(rows, local_rows)
        np.testing.assert_array_equal(vectors, local_vectors)
    for key in ("params", "counts"):  # model, fingerprint, recipe, dim; rows and chunks
        assert stage_record(index, "embeddings")[key] == stage_record(local_index, "embeddings")[key]


@pytest.mark.slow
def test_ray_slice_then_resume_encodes_only_the_missing_chunks(
    local_ray, local_index, corpus, tiny_bert, tmp_path
) -> None:
    index = fresh_index(tmp_path, corpus)
    part = on_ray(index, tiny_bert, slice_id=1, slices=2)
    store = EmbeddingStore.open(index / "embeddings")
    assert part.work["encoded_chunks"] == 2 and store.missing_chunks() == [0, 2, 4]
    assert "still missing" in part.summary and stage_record(index, "embeddings") is None
    before = {chunk: store.done_path(chunk).stat().st_mtime_ns for chunk in (1, 3)}
    rest = on_ray(index, tiny_bert)
    assert rest.work["encoded_chunks"] == 3 and rest.work["documents"] == 70 - 32 and rest.record is not None
    assert {chunk: store.done_path(chunk).stat().st_mtime_ns for chunk in (1, 3)} == before
    for (_, vectors), (_, local_vectors) in zip(all_chunks(index), all_chunks(local_index), strict=True):
        np.testing.assert_array_equal(vectors, local_vectors)
    assert stage_record(index, "embeddings") is not None


def test_nothing_missing_does_not_touch_ray(local_index, tiny_bert, monkeypatch) -> None:
    monkeypatch.setattr("lyre.indexes.encode_runners.connect", lambda address: pytest.fail("Ray was started"))
    report = encode_stage(
        local_index, EncodeOptions(embed_model=str(tiny_bert), chunk_rows=CHUNK_ROWS, engine="ray")
    )
    assert report.work.get("encoded_chunks", 0) == 0 and stage_record(local_index, "embeddings") is not None


@pytest.mark.slow
def test_worker_failure_is_one_line_and_records_nothing(local_ray, corpus, tiny_bert, tmp_path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for path in tiny_bert.rglob("*"):
        if path.is_file():
            target = broken / path.relative_to(tiny_bert)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"not weights" if path.name == "model.safetensors" else path.read_bytes())
    index = fresh_index(tmp_path, corpus)
    with pytest.raises(LyreError, match="rerun the same command") as error:
        on_ray(index, broken)
    assert "\n" not in str(error.value)
    assert stage_record(index, "embeddings") is None
    assert EmbeddingStore.open(index / "embeddings").missing_chunks() == [0, 1, 2, 3, 4]  # none half-written


@pytest.fixture(autouse=True)
def _restore_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Actors silence progress in their own process; run here in-process, that must not outlive the test."""
    monkeypatch.setattr("lyre.basics.progress._quiet", False)


def test_actor_refuses_an_index_its_node_cannot_see(tmp_path, tiny_bert) -> None:
    actor = ChunkEncoder(str(tmp_path / "elsewhere"), str(tiny_bert), "any", {}, "cpu", None, 1)
    with pytest.raises(LyreError, match=r"not visible on Ray node .*same path"):
        actor.load()


def test_actor_refuses_a_different_copy_of_the_model(local_index, tiny_bert) -> None:
    recipe = stage_record(local_index, "embeddings")["params"]["recipe"]
    actor = ChunkEncoder(str(local_index), str(tiny_bert), "0123456789abcdef", recipe, "cpu", None, 1)
    with pytest.raises(LyreError, match=r"another copy of .* same model files"):
        actor.load()
