"""Reranking on worker processes (one per device; CPU devices here) and on Ray actors: the same scores,
the same kept groups and the same run bytes as reranking in this process, whichever worker finishes first;
a killed run resumes under any engine with only its missing groups; failures are one line; the engine is
checked before anything loads."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import LyreCli
from lyre.basics.errors import LyreError, OptionError
from lyre.basics.progress import Counts, ProgressSink
from lyre.formats.queries import read_queries
from lyre.formats.records import Query, Run
from lyre.formats.runs import rank_order, write_run
from lyre.indexes.docstore import DocStore
from lyre.indexes.ingest import ingest
from lyre.models.engines import visible_gpus
from lyre.retrieval import rerank as rerank_module
from lyre.retrieval.cache import CACHE_DIR, DATABASE, CacheOptions, SearchCache, content_key, text_hash
from lyre.retrieval.options import RerankOptions, RerankRunOptions
from lyre.retrieval.plan import LoadedReranker, load_reranker
from lyre.retrieval.rerank import _group_pairs, query_groups, rerank
from lyre.retrieval.rerank_parts import GroupScores, parts_folder
from lyre.retrieval.rerank_run import rerank_run_file
from lyre.retrieval.rerank_workers import DeviceRerankers, Pairs, device_kind

QUERIES = 8
DEPTH = 6
GROUP_PAIRS = 12  # two queries of 6 pairs a group: 4 groups, more than the two workers hold at once


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, sample: Path) -> Path:
    """The sample's docstore: all a rerank reads."""
    folder = tmp_path_factory.mktemp("rerank-workers") / "index"
    ingest(sample / "corpus.jsonl", folder)
    return folder


@pytest.fixture(scope="module")
def queries(sample: Path) -> list[Query]:
    return read_queries(sample / "queries.tsv")[:QUERIES]


@pytest.fixture(scope="module")
def first_stage(queries: list[Query]) -> Run:
    """Nine sample documents per query, a different stride each, scored 9, 8, ... (the top 6 reranked)."""
    return {
        query.qid: {f"D{(7 * i + j) % 120 + 1:03d}": float(9 - j) for j in range(9)}
        for i, query in enumerate(queries)
    }


@pytest.fixture(scope="module")
def options(qwen_reranker_folder: Path) -> RerankOptions:
    return RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=DEPTH)


@pytest.fixture(scope="module")
def in_process(qwen_reranker_folder: Path, options: RerankOptions) -> LoadedReranker:
    """The reference: the reranker in this process (engine local, no GPU)."""
    loaded = load_reranker(qwen_reranker_folder, options)
    assert not hasattr(loaded.model, "score_groups")
    return loaded


@pytest.fixture(scope="module")
def workers(qwen_reranker_folder: Path, options: RerankOptions) -> Iterator[DeviceRerankers]:
    """Two spawned CPU workers, each holding a replica (the device list is injected)."""
    scorers = DeviceRerankers.start(["cpu", "cpu"], qwen_reranker_folder, options)
    yield scorers
    scorers.close()


def run_bytes(run: Run, path: Path) -> bytes:
    write_run(path, run, tag="t", meta={})
    return path.read_bytes()


def rerank_with(
    scorer: object,
    identity: str,
    first_stage: Run,
    queries: list[Query],
    index: Path,
    parts: Path,
    pair_cache: SearchCache | None = None,
) -> Run:
    store = DocStore.open(index / "docstore")
    return rerank(
        first_stage,
        queries,
        store,
        scorer,
        DEPTH,
        parts=GroupScores(parts),
        identity=identity,
        pair_cache=pair_cache,
        group_pairs=GROUP_PAIRS,
    )


@pytest.mark.slow
def test_workers_score_every_group_once_as_this_process_does(
    workers: DeviceRerankers, in_process: LoadedReranker, first_stage: Run, queries: list[Query], index: Path
) -> None:
    texts = {query.qid: query.text for query in queries}
    heads = {qid: list(docs)[:DEPTH] for qid, docs in first_stage.items()}
    groups = query_groups(heads, GROUP_PAIRS)
    store = DocStore.open(index / "docstore")
    pairs = {number: _group_pairs(group, heads, texts, store)[1] for number, group in enumerate(groups)}
    counts = Counts()
    finished = list(workers.score_groups(pairs.items(), counts))
    assert sorted(number for number, _ in finished) == list(range(len(groups))) == [0, 1, 2, 3]
    assert counts.tokenized_items == counts.done_items == QUERIES * DEPTH  # each pair once, by one worker
    assert counts.done_tokens == counts.tokenized_tokens > 0
    for number, scores in finished:
        expected = in_process.model.score_pairs(pairs[number])
        assert scores.dtype == np.float32 and scores.tobytes() == expected.tobytes()
    settings = in_process.model.settings.to_dict()
    assert workers.settings.to_dict() == {**settings, "device": device_kind(settings["device"])}


@pytest.mark.slow
def test_two_workers_keep_the_same_groups_and_write_the_same_run(
    workers: DeviceRerankers,
    in_process: LoadedReranker,
    first_stage: Run,
    queries: list[Query],
    index: Path,
    tmp_path: Path,
) -> None:
    identity = in_process.identity
    reference = rerank_with(in_process.model, identity, first_stage, queries, index, tmp_path / "a")
    reranked = rerank_with(workers, identity, first_stage, queries, index, tmp_path / "b")
    assert list(reranked) == list(first_stage)
    assert run_bytes(reranked, tmp_path / "b.run") == run_bytes(reference, tmp_path / "a.run")
    assert GroupScores(tmp_path / "b").done() == [0, 1, 2, 3]
    for number in range(4):
        name = f"group-{number:06d}"
        for suffix in (".npy", ".json"):
            kept = (tmp_path / "b" / name).with_suffix(suffix).read_bytes()
            assert kept == (tmp_path / "a" / name).with_suffix(suffix).read_bytes()


class Watched:
    """The workers, noting which groups they were given (and how many pairs of each) and what progress
    they reported."""

    def __init__(self, workers: DeviceRerankers) -> None:
        self.workers = workers
        self.settings = workers.settings
        self.scored: list[int] = []
        self.sent: dict[int, int] = {}
        self.counts = Counts()

    def score_groups(
        self, groups: Iterable[tuple[int, Pairs]], progress: ProgressSink
    ) -> Iterator[tuple[int, np.ndarray]]:
        def noted() -> Iterator[tuple[int, Pairs]]:
            for number, pairs in groups:
                self.sent[number] = len(pairs)
                yield number, pairs

        for number, scores in self.workers.score_groups(noted(), self.counts):
            self.scored.append(number)
            yield number, scores

    def close(self) -> None:
        """The module's workers outlive one test."""


@pytest.mark.slow
def test_a_run_killed_in_this_process_resumes_on_workers_with_only_the_missing_groups(
    workers: DeviceRerankers,
    in_process: LoadedReranker,
    first_stage: Run,
    queries: list[Query],
    index: Path,
    tmp_path: Path,
) -> None:
    parts = tmp_path / "run.parts"
    whole = rerank_with(in_process.model, in_process.identity, first_stage, queries, index, parts)
    for number in (1, 3):  # as if killed with groups 0 and 2 finished
        for suffix in (".npy", ".json"):
            (parts / f"group-{number:06d}").with_suffix(suffix).unlink()
    kept = {number: (parts / f"group-{number:06d}.json").stat().st_mtime_ns for number in (0, 2)}
    watched = Watched(workers)
    resumed = rerank_with(watched, in_process.identity, first_stage, queries, index, parts)
    assert sorted(watched.scored) == [1, 3] and watched.counts.done_items == 2 * GROUP_PAIRS
    assert {number: (parts / f"group-{number:06d}.json").stat().st_mtime_ns for number in (0, 2)} == kept
    assert run_bytes(resumed, tmp_path / "resumed.run") == run_bytes(whole, tmp_path / "whole.run")


@pytest.mark.slow
def test_engine_local_with_several_devices_reranks_a_run_file_on_workers(
    in_process: LoadedReranker,
    first_stage: Run,
    index: Path,
    sample: Path,
    options: RerankOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole `lyre rerank` path: the engine opens the workers, the run is the in-process run, and the
    workers are stopped when it is written."""
    write_run(tmp_path / "first.run", first_stage, tag="first", meta={})
    monkeypatch.setattr(rerank_module, "RERANK_GROUP_PAIRS", GROUP_PAIRS)
    queries = sample / "queries.tsv"
    tagged = RerankRunOptions(tag="reranked")
    rerank_run_file(index, queries, tmp_path / "first.run", tmp_path / "here.run", options, tagged)
    children = len(multiprocessing.active_children())
    monkeypatch.setattr("lyre.retrieval.rerank_workers.worker_devices", lambda engine: ["cpu", "cpu"])
    rerank_run_file(index, queries, tmp_path / "first.run", tmp_path / "workers.run", options, tagged)
    assert (tmp_path / "workers.run").read_bytes() == (tmp_path / "here.run").read_bytes()
    assert not parts_folder(tmp_path / "workers.run").exists()
    assert len(multiprocessing.active_children()) == children  # both workers stopped


@pytest.mark.slow
def test_a_worker_error_comes_back_as_its_one_line_and_stops_the_workers(
    qwen_reranker_folder: Path, options: RerankOptions
) -> None:
    scorers = DeviceRerankers.start(["cpu"], qwen_reranker_folder, options)
    endless = " ".join(["alarm"] * 5000)  # its prompt alone is over the reranker's max_length
    with pytest.raises(LyreError, match="rerank prompt alone takes") as error:
        list(scorers.score_groups([(0, [("alarm", "short"), (endless, "short")])], Counts()))
    assert "\n" not in str(error.value)
    assert not any(worker.is_alive() for worker in scorers.pool.workers)
    with pytest.raises(LyreError, match="stopped by an earlier failure; rerun the same command"):
        list(scorers.score_groups([(0, [("alarm", "short")])], Counts()))


@pytest.mark.slow
def test_a_dying_worker_is_one_line_that_says_how_to_resume(
    qwen_reranker_folder: Path, options: RerankOptions, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-reranker"
    shutil.copytree(qwen_reranker_folder, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    dead = r"^reranking worker on cpu died \(exit code 1\); rerun the same command to resume"
    with pytest.raises(LyreError, match=dead):
        DeviceRerankers.start(["cpu"], broken, replace(options, rerank_model=str(broken)))


@pytest.mark.slow
def test_the_engine_is_checked_before_anything_loads(
    index: Path, sample: Path, first_stage: Run, tmp_path: Path, lyre: LyreCli
) -> None:
    write_run(tmp_path / "first.run", first_stage, tag="first", meta={})
    absent = str(tmp_path / "no-such-model")  # loading it would fail with another message

    def rerank_to(out: Path, **settings: object) -> None:
        chosen = RerankOptions(rerank_model=absent, **settings)  # type: ignore[arg-type]
        first, queries = tmp_path / "first.run", sample / "queries.tsv"
        rerank_run_file(index, queries, first, out, chosen, RerankRunOptions())

    with pytest.raises(OptionError, match="ray_address head:6379: applies only with engine ray"):
        rerank_to(tmp_path / "a.run", ray_address="head:6379")
    with pytest.raises(OptionError, match="engine cluster: is not known; use one of local, gpus, ray"):
        rerank_to(tmp_path / "b.run", engine="cluster")
    if visible_gpus() == 0:
        with pytest.raises(OptionError, match="engine gpus: no CUDA GPU is visible"):
            rerank_to(tmp_path / "c.run", engine="gpus")
        result = lyre(
            "rerank", "--index", index, "--queries", sample / "queries.tsv", "--run", tmp_path / "first.run",
            "--out", tmp_path / "d.run", "--rerank-model", absent, "--engine", "gpus", check=False,
        )  # fmt: skip
        assert result.returncode == 2
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: --engine gpus: no CUDA GPU is visible")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first.run", "first.run.meta.json"]


# --- Ray -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    """One local Ray for these tests (startup costs seconds); the engine joins it instead of starting one."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_actors_write_the_in_process_run(
    local_ray: object,
    index: Path,
    sample: Path,
    first_stage: Run,
    options: RerankOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_run(tmp_path / "first.run", first_stage, tag="first", meta={})
    monkeypatch.setattr(rerank_module, "RERANK_GROUP_PAIRS", GROUP_PAIRS)
    queries = sample / "queries.tsv"
    tagged = RerankRunOptions(tag="reranked")
    rerank_run_file(index, queries, tmp_path / "first.run", tmp_path / "here.run", options, tagged)
    on_ray = replace(options, engine="ray", ray_cpu_actors=2)
    rerank_run_file(index, queries, tmp_path / "first.run", tmp_path / "ray.run", on_ray, tagged)
    assert (tmp_path / "ray.run").read_bytes() == (tmp_path / "here.run").read_bytes()
    assert not parts_folder(tmp_path / "ray.run").exists()
    assert actors_released(local_ray, cpus=2.0)


def actors_released(ray: Any, cpus: float, seconds: float = 30.0) -> bool:
    """Whether the actors' CPUs are back: Ray frees a killed actor's resources asynchronously, so a busy
    machine may take a moment to report them."""
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU") != cpus:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# The pair cache on workers ------------------------------------------------------------------------------


def cached_rerank(
    scorer: object,
    identity: str,
    first_stage: Run,
    queries: list[Query],
    index: Path,
    parts: Path,
    home: Path,
) -> tuple[Run, dict[str, dict[str, int]]]:
    """The reranked run with the pair cache of ``home`` (standing for an index folder), and its counts."""
    home.mkdir(exist_ok=True)
    cache = SearchCache.open(home, CacheOptions())
    assert cache is not None
    try:
        reranked = rerank_with(scorer, identity, first_stage, queries, index, parts, cache)
    finally:
        cache.close()
    return reranked, cache.summary()


@pytest.mark.slow
def test_workers_are_sent_only_the_pairs_the_cache_lacks(
    index: Path,
    queries: list[Query],
    first_stage: Run,
    in_process: LoadedReranker,
    workers: DeviceRerankers,
    tmp_path: Path,
) -> None:
    identity, model = in_process.identity, in_process.model
    texts = {query.qid: query.text for query in queries}
    heads = {qid: list(docs)[:DEPTH] for qid, docs in first_stage.items()}
    groups = query_groups(heads, GROUP_PAIRS)
    assert len(groups) == 4
    uncached = rerank_with(model, identity, first_stage, queries, index, tmp_path / "u")
    filled = tmp_path / "filled"  # every pair scored in this process, in the batches of an uncached run
    everything, counts = cached_rerank(model, identity, first_stage, queries, index, tmp_path / "f", filled)
    assert counts["misses"] == {"pair": QUERIES * DEPTH}
    assert run_bytes(everything, tmp_path / "f.run") == run_bytes(uncached, tmp_path / "u.run")

    # Forget group 1 and the second query of group 3: group 1 goes whole to a worker, group 3 in part.
    store = DocStore.open(index / "docstore")
    docids, pairs = _group_pairs([*groups[1], groups[3][1]], heads, texts, store)
    keys = [
        content_key("pair", identity, query, docid, text_hash(text))
        for (query, text), docid in zip(pairs, docids, strict=True)
    ]
    with sqlite3.connect(filled / CACHE_DIR / DATABASE) as database:
        removed = database.executemany("DELETE FROM entries WHERE key = ?", [(key,) for key in keys]).rowcount
    database.close()
    assert removed == len(keys) == 3 * DEPTH
    partly = tmp_path / "partly"
    shutil.copytree(filled, partly)  # the same partly filled cache, for this process

    watched = Watched(workers)
    on_workers, counts = cached_rerank(watched, identity, first_stage, queries, index, tmp_path / "w", filled)
    assert watched.sent == {1: 2 * DEPTH, 3: DEPTH}  # groups 0 and 2 needed no worker
    assert counts["hits"] == {"pair": 5 * DEPTH} and counts["misses"] == {"pair": 3 * DEPTH}
    here, _ = cached_rerank(model, identity, first_stage, queries, index, tmp_path / "h", partly)
    # Cached pairs and groups scored whole have the same bits wherever they were scored. The pairs of a
    # group scored in part (its second query) are batched apart from the rest of their group, so their
    # float32 sums may run in another order (in a worker or here) and differ in the last bits.
    apart = groups[3][1]
    for qid in first_stage:
        got = rank_order(on_workers[qid])
        for other in (here, uncached):
            want = rank_order(other[qid])
            if qid == apart:
                assert [docid for docid, _ in got] == [docid for docid, _ in want]
                assert [score for _, score in got] == pytest.approx([score for _, score in want], rel=1e-5)
            else:
                assert got == want
    for number in range(4):  # kept groups hold all their scores, as this process keeps them
        name = f"group-{number:06d}"
        records = [(tmp_path / folder / name).with_suffix(".json").read_bytes() for folder in "wh"]
        kept, expected = (np.load((tmp_path / folder / name).with_suffix(".npy")) for folder in "wh")
        assert records[0] == records[1] and kept.shape == expected.shape == (2 * DEPTH,)
        if number == 3:
            assert kept[:DEPTH].tobytes() == expected[:DEPTH].tobytes()  # the cached first query
            assert kept.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
        else:
            assert kept.tobytes() == expected.tobytes()


def test_a_group_whose_pairs_are_all_cached_goes_to_no_worker(
    index: Path,
    queries: list[Query],
    first_stage: Run,
    in_process: LoadedReranker,
    workers: DeviceRerankers,
    tmp_path: Path,
) -> None:
    identity, model = in_process.identity, in_process.model
    filled = tmp_path / "filled"
    reference, _ = cached_rerank(model, identity, first_stage, queries, index, tmp_path / "f", filled)
    watched = Watched(workers)
    cached, counts = cached_rerank(watched, identity, first_stage, queries, index, tmp_path / "w", filled)
    assert watched.sent == {} and counts["hits"] == {"pair": QUERIES * DEPTH}
    assert run_bytes(cached, tmp_path / "w.run") == run_bytes(reference, tmp_path / "f.run")
    assert GroupScores(tmp_path / "w").done() == [0, 1, 2, 3]
