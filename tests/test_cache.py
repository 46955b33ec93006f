"""The caches in the index folder: a cached search writes the same bytes as an uncached one, a search that
changes only fusion reads every first-stage list instead of opening the indexes, reranking scores only
pairs it has not scored, the store stays under its limit (least recently used go first), two processes
write it at once safely, and a cache that cannot be written is turned off with one line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import REPOSITORY, LyreCli, modules_imported_by, one_line_error
from lyre.formats.queries import read_queries
from lyre.formats.runs import rank_order
from lyre.indexes import cache_store
from lyre.models.reranker import Reranker
from lyre.retrieval.cache import (
    CACHE_DIR,
    DATABASE,
    MIB,
    CacheOptions,
    SearchCache,
    content_key,
    decode_aligned,
    decode_list,
    encode_aligned,
    encode_list,
)
from lyre.retrieval.fusion.aligned import align
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan

MODES = ("bm25", "dense", "hybrid")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, sample: Path) -> Path:
    out = tmp_path_factory.mktemp("cache") / "index"
    model = "sentence-transformers/all-MiniLM-L6-v2"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", out, "--embed-model", model)
    return out


def search(lyre: LyreCli, index: Path, sample: Path, out: Path, *args: str) -> tuple[bytes, dict, str]:
    """One ``lyre search`` without reranking: the run's bytes, its sidecar, and stderr."""
    result = lyre(
        "search", "--index", index, "--queries", sample / "queries.tsv", "--out", out, "--rerank-depth", "0",
        *args,
    )  # fmt: skip
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    return out.read_bytes(), meta, result.stderr


def test_lists_round_trip_exactly() -> None:
    doc_scores = {"d2": 0.1 + 0.2, "d1": float(np.float32(1 / 3)), "d 3": -1e-300, "é": 5.0}
    decoded = decode_list(encode_list(doc_scores))
    assert list(decoded.items()) == list(doc_scores.items())  # order and every bit of every score
    assert decode_list(encode_list({})) == {}


def test_aligned_lists_round_trip_exactly() -> None:
    aligned = align([{"d2": 0.1 + 0.2, "é": -0.0}, {}, {"d1": float(np.float32(1 / 3)), "d2": -1e-300}])
    decoded = decode_aligned(encode_aligned(aligned) or b"")
    assert decoded.docids.tolist() == aligned.docids.tolist() == ["d1", "d2", "é"]
    assert decoded.scores.tobytes() == aligned.scores.tobytes()  # every bit, -0.0 included
    assert decoded.present.tolist() == aligned.present.tolist()
    assert decode_aligned(encode_aligned(align([{}, {}])) or b"").docids.tolist() == []
    assert encode_aligned(align([{"a\nb": 1.0}])) is None  # not kept: newlines separate the docids


def test_keys_change_with_every_part() -> None:
    key = content_key("side", "stages", 1000, "query text")
    assert key == content_key("side", "stages", 1000, "query text")
    assert key.startswith("side:")
    others = [
        content_key("vector", "stages", 1000, "query text"),
        content_key("side", "stages", 999, "query text"),
        content_key("side", "stages", 1000, "query text "),
        content_key("side", "other stages", 1000, "query text"),
    ]
    assert len({key, *others}) == 5


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_a_cached_search_writes_the_bytes_of_an_uncached_one(
    index: Path, lyre: LyreCli, sample: Path, tmp_path: Path, mode: str
) -> None:
    uncached, meta, _ = search(lyre, index, sample, tmp_path / "a.run", "--mode", mode, "--no-cache")
    assert meta["cache"] is None
    filled, meta, _ = search(lyre, index, sample, tmp_path / "b.run", "--mode", mode)
    kind = "aligned" if mode == "hybrid" else "side"  # a hybrid's two lists are kept aligned, per query
    assert sum(meta["cache"]["hits"].values()) + sum(meta["cache"]["misses"].values()) > 0
    reused, meta, stderr = search(lyre, index, sample, tmp_path / "c.run", "--mode", mode)
    assert meta["cache"]["hits"] == {kind: 30} and meta["cache"]["misses"] == {kind: 0}
    assert "dense search:" not in stderr  # the dense index was never opened
    assert uncached == filled == reused


@pytest.mark.slow
def test_changing_only_fusion_reruns_no_first_stage(
    index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    search(lyre, index, sample, tmp_path / "first.run")  # hybrid RRF: fills the cache (or finds it full)
    linear = ("--fusion", "linear", "--weight", "0.3")
    cached, meta, stderr = search(lyre, index, sample, tmp_path / "linear.run", *linear)
    assert meta["cache"]["misses"] == {"aligned": 0} and meta["cache"]["hits"] == {"aligned": 30}
    assert "dense search:" not in stderr
    uncached, _, _ = search(lyre, index, sample, tmp_path / "linear-uncached.run", *linear, "--no-cache")
    assert cached == uncached

    # Another depth (below the sample's 120 documents, where a depth is capped) lists anew ...
    shallower, meta, _ = search(lyre, index, sample, tmp_path / "depth.run", "--depth", "60", "--k", "50")
    assert meta["cache"]["misses"]["aligned"] == 30 and meta["cache"]["misses"]["side"] == 60
    assert meta["cache"]["hits"]["vector"] == 30  # ... but the query vectors are the same
    uncached, _, _ = search(
        lyre, index, sample, tmp_path / "depth-uncached.run", "--depth", "60", "--k", "50", "--no-cache"
    )
    assert shallower == uncached


@pytest.mark.slow
def test_reranking_scores_only_the_pairs_not_scored_before(
    index: Path, sample: Path, qwen_reranker_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = read_queries(sample / "queries.tsv")[:6]
    options = SearchOptions(mode="bm25", k=20, depth=20)
    scored: list[tuple[str, str]] = []
    score_pairs = Reranker.score_pairs

    def counting(self: Reranker, pairs: list[tuple[str, str]], progress: object = None) -> np.ndarray:
        scored.extend(pairs)
        return score_pairs(self, pairs, progress=progress)

    monkeypatch.setattr(Reranker, "score_pairs", counting)

    def run(depth: int, cache: CacheOptions | None, **changes: object) -> dict:
        scored.clear()
        rerank = RerankOptions(rerank_model=str(qwen_reranker_folder), rerank_depth=depth)
        plan = SearchPlan.open(index, replace(options, **changes), rerank, cache)
        return plan.search(queries)

    uncached = run(5, None)
    assert len(scored) == 6 * 5
    assert run(5, CacheOptions()) == uncached and len(scored) == 6 * 5  # the first cached run scores all
    assert run(5, CacheOptions()) == uncached and scored == []  # ... and the next none
    deeper = run(8, CacheOptions())
    first = SearchPlan.open(index, options, RerankOptions(rerank_depth=0)).search(queries)
    heads = {qid: [docid for docid, _ in rank_order(docs)] for qid, docs in first.items()}
    new = [(query.text, docid) for query in queries for docid in heads[query.qid][5:8]]
    assert len(scored) == len(new) > 6  # only ranks 6 to 8 are new (some queries have fewer hits)
    reference = run(8, None)
    for qid in reference:
        assert [d for d, _ in rank_order(deeper[qid])] == [d for d, _ in rank_order(reference[qid])]
        assert [s for _, s in rank_order(deeper[qid])] == pytest.approx(
            [s for _, s in rank_order(reference[qid])], rel=1e-5
        )  # new pairs were batched without the old ones: float32 sums in another order
    run(5, CacheOptions(), rrf_k=10)  # bm25 mode: no fusion, so the same heads
    assert scored == []


def test_least_recently_used_entries_go_beyond_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(1, 10**6))
    monkeypatch.setattr(cache_store.time, "time", lambda: float(next(clock)))
    cache = SearchCache.open(tmp_path, CacheOptions(cache_limit_mb=1))
    assert cache is not None
    value = bytes(MIB // 4)  # four fill the limit
    cache.put({"a": value, "b": value, "c": value})
    assert cache.get(["a"]) == {"a": value}  # a is now used after b and c
    cache.put({"d": value})  # 1 MiB: at the limit, nothing goes
    assert set(cache.get(["a", "b", "c", "d"])) == {"a", "b", "c", "d"}
    cache.get(["b", "c", "d"])  # a is the least recently used
    cache.put({"e": value})  # 1.25 MiB: down to 0.9 MiB, i.e. three entries
    assert set(cache.get(["a", "b", "c", "d", "e"])) == {"c", "d", "e"}
    cache.close()
    connection = sqlite3.connect(tmp_path / CACHE_DIR / DATABASE)
    assert connection.execute("SELECT SUM(size) FROM entries").fetchone() == (3 * len(value),)
    connection.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lyre.retrieval.cache import CacheOptions, SearchCache

    folder, name = Path(sys.argv[1]), sys.argv[2]
    cache = SearchCache.open(folder, CacheOptions())
    assert cache is not None
    for start in range(0, 400, 4):  # 100 short write transactions
        cache.put({f"{name}-{i}": f"{name}:{i}".encode() * 50 for i in range(start, start + 4)})
        cache.get([f"{name}-{start}", f"other-{start}"])
    cache.close()
    print("done")
    """
)


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    assert [writer.communicate(timeout=120)[0].strip() for writer in writers] == ["done", "done"]
    assert [writer.returncode for writer in writers] == [0, 0]
    cache = SearchCache.open(tmp_path, CacheOptions())
    assert cache is not None
    keys = [f"{name}-{i}" for name in ("first", "second") for i in range(400)]
    found = cache.get(keys)
    assert found == {key: key.replace("-", ":").encode() * 50 for key in keys}
    assert cache.connection is not None
    assert cache.connection.execute("PRAGMA integrity_check").fetchone() == (b"ok",)  # text as bytes
    assert cache.connection.execute("PRAGMA journal_mode").fetchone() == (b"wal",)
    cache.close()


@pytest.mark.slow
def test_an_unwritable_cache_is_off_with_one_line_and_the_same_run(
    lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only")
    expected, _, _ = search(lyre, index, sample, tmp_path / "a.run", "--mode", "bm25", "--no-cache")
    (index / CACHE_DIR).write_text("a file where the cache folder would be")
    run, meta, stderr = search(lyre, index, sample, tmp_path / "b.run", "--mode", "bm25")
    assert run == expected and meta["cache"] is None
    assert [line for line in stderr.splitlines() if "cache" in line] == [
        f"cache off: {index / CACHE_DIR / DATABASE} cannot be written ([Errno 17] File exists: "
        f"'{index / CACHE_DIR}'); searching without it"
    ]
    (index / CACHE_DIR).unlink()
    (index / CACHE_DIR).mkdir()
    (index / CACHE_DIR / DATABASE).write_bytes(b"not a database" * 100)
    run, meta, stderr = search(lyre, index, sample, tmp_path / "c.run", "--mode", "bm25")
    assert run == expected and meta["cache"] is None
    repair = f"lyre index {sample / 'corpus.jsonl'} --out {index} --verify"
    assert [line for line in stderr.splitlines() if "cache" in line] == [
        f"warning: {index / CACHE_DIR / DATABASE}: the cache database is damaged (file is not a database); "
        f"searching without it (`{repair}` starts it again)"
    ]


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0, reason="root ignores modes")
def test_a_read_only_index_folder_searches_without_the_cache(
    lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--bm25-only")
    expected, _, _ = search(lyre, index, sample, tmp_path / "a.run", "--mode", "bm25", "--no-cache")
    index.chmod(0o555)
    try:
        run, meta, stderr = search(lyre, index, sample, tmp_path / "b.run", "--mode", "bm25")
    finally:
        index.chmod(0o755)
    assert run == expected and meta["cache"] is None and "cache off:" in stderr


@pytest.mark.slow
def test_a_cached_search_refuses_changed_query_model_weights_as_an_uncached_one_does(
    lyre: LyreCli, sample: Path, tmp_path: Path, tiny_bert: Path
) -> None:
    """Query vectors read from the cache were made by the recorded model; the folder is still checked,
    so replacing its weights stops a cached search with the line an uncached search prints."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    index = tmp_path / "index"
    lyre("-q", "index", sample / "corpus.jsonl", "--out", index, "--embed-model", folder)
    args = ["-q", "search", "--index", index, "--queries", sample / "queries.tsv", "--rerank-depth", "0"]
    lyre(*args, "--mode", "dense", "--out", tmp_path / "filled.run")  # every query vector now cached
    weights = folder / "model.safetensors"
    save_file(
        {name: -tensor for name, tensor in load_file(weights).items()}, weights, metadata={"format": "pt"}
    )
    cached = lyre(*args, "--mode", "dense", "--out", tmp_path / "cached.run", check=False)
    uncached = lyre(*args, "--mode", "dense", "--out", tmp_path / "uncached.run", "--no-cache", check=False)
    changed = "the model's files (weights, config, tokenizer or pooling) changed"
    assert one_line_error(cached, changed) == one_line_error(uncached)
    assert not (tmp_path / "cached.run").exists()


@pytest.mark.slow
def test_a_search_with_every_list_cached_imports_no_model_library(
    index: Path, lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    """Where the query model was found (a hub id here) is remembered, so a cached search checks its
    fingerprint without importing huggingface_hub, and loads neither torch nor Faiss."""
    search(lyre, index, sample, tmp_path / "first.run")
    argv = ["-q", "search", "--index", index, "--queries", sample / "queries.tsv", "--rerank-depth", "0"]
    _, modules = modules_imported_by(*argv, "--out", tmp_path / "second.run")
    assert {"torch", "huggingface_hub", "faiss"} & modules == set()
    assert (tmp_path / "second.run").read_bytes() == (tmp_path / "first.run").read_bytes()
