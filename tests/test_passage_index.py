"""Passage indexes end to end: ``lyre index --passage-tokens``, search with MaxP/FirstP/SumP/none, the
reranker reading each candidate's best passages, and kill-and-rerun of the passages and encode stages.

The corpus: the bundled sample's documents joined four at a time into 30 long documents (about 350
MiniLM tokens each), split into windows of 64 tokens every 48, so every document has several passages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from lyre.basics.errors import LyreError, OptionError
from lyre.formats.records import Document, Query, document_text
from lyre.formats.runs import rank_order, read_run
from lyre.indexes.build import build_index
from lyre.indexes.docstore import DocStore
from lyre.indexes.encode import EncodeOptions
from lyre.indexes.manifest import read_manifest
from lyre.indexes.passage_stage import PassageStore
from lyre.indexes.passages import PassageOptions, TokenSplitter, parse_passage_id
from lyre.retrieval.aggregation import AggregationOptions, aggregate
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan
from scale_fixtures import save_tiny_bert, write_corpus

if TYPE_CHECKING:
    from helpers import LyreCli

pytest.importorskip("faiss")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SIZE, STRIDE = 64, 48
JOINED = 4
QUERIES = [
    Query("q1", "how do vaccines train the immune system"),
    Query("q2", "protein folding and cell growth"),
    Query("q3", "ocean tides and the moon"),
]


def long_corpus(sample: Path, out: Path) -> Path:
    """The sample's documents joined ``JOINED`` at a time (title of the first, texts one after another)."""
    rows = [json.loads(line) for line in (sample / "corpus.jsonl").read_text().splitlines()]
    with open(out, "w", encoding="utf-8") as handle:
        for start in range(0, len(rows), JOINED):
            group = rows[start : start + JOINED]
            text = " ".join(row["text"] for row in group)
            handle.write(json.dumps({"_id": f"L{start // JOINED}", "title": group[0]["title"], "text": text}))
            handle.write("\n")
    return out


@pytest.fixture(scope="module")
def passage_index(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("passage-index")
    corpus = long_corpus(sample, root / "long.jsonl")
    index = root / "index"
    build_index(
        corpus,
        index,
        encode=EncodeOptions(embed_model=MODEL, device="cpu"),
        passages=PassageOptions(passage_tokens=SIZE, passage_stride=STRIDE),
    )
    return index


def plan(
    index: Path,
    mode: str,
    rule: str | None,
    depth: int = 20,
    reranker: Path | None = None,
    rerank_depth: int = 0,
    rerank_passages: int | None = None,
) -> SearchPlan:
    """A search plan on ``index`` (k = depth), reranking the top ``rerank_depth`` with ``reranker``."""
    rerank_options = RerankOptions(rerank_model=str(reranker), rerank_depth=rerank_depth if reranker else 0)
    aggregation = AggregationOptions(rule, rerank_passages)
    return SearchPlan.open(
        index, SearchOptions(mode=mode, k=depth, depth=depth), rerank_options, aggregation=aggregation
    )


@pytest.mark.slow
def test_passages_cover_every_token_and_fit_the_model(passage_index: Path) -> None:
    documents = DocStore.open(passage_index / "docstore")
    passages = PassageStore.open(passage_index)
    splitter = TokenSplitter.for_model(MODEL, SIZE, STRIDE)
    stored = passages.store.fetch(np.arange(len(passages.store)))
    parents = documents.fetch(passages.parent)
    assert len(stored) > 2 * len(documents)  # long documents: several passages each
    lengths = splitter.lengths([splitter._model_text(p.title, p.text) for p in stored])
    assert max(lengths) <= SIZE
    covered: dict[str, np.ndarray] = {}
    for passage, parent, start, end in zip(stored, parents, passages.start, passages.end, strict=True):
        docid, _ = parse_passage_id(passage.docid)
        assert docid == parent.docid and passage.title == parent.title
        assert passage.text == parent.text[start:end]
        mask = covered.setdefault(docid, np.zeros(len(parent.text), dtype=bool))
        mask[start:end] = True
    for document in documents.fetch(np.arange(len(documents))):
        blank = np.array([character.isspace() for character in document.text], dtype=bool)
        assert (covered[document.docid] | blank).all(), document.docid

    stages = read_manifest(passage_index)["stages"]
    record = stages["passages"]
    assert record["params"]["settings"]["size"] == SIZE and record["params"]["settings"]["stride"] == STRIDE
    assert record["counts"]["passages"] == len(stored) and record["counts"]["documents"] == len(documents)
    assert record["counts"]["passages_per_document_mean"] == len(stored) / len(documents)
    assert record["counts"]["length_max"] > SIZE  # the documents were longer than a passage
    assert stages["bm25"]["params"]["store"] == "passages" == stages["embeddings"]["params"]["store"]
    assert stages["bm25"]["counts"]["documents"] == len(stored) == stages["embeddings"]["counts"]["documents"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_searches_return_documents_aggregated_by_the_rule(passage_index: Path, mode: str) -> None:
    depth = 10
    searched = plan(passage_index, mode, "none", depth=depth)
    factor = plan(passage_index, mode, None).passages.factor  # type: ignore[union-attr]
    assert factor == int(np.ceil(read_manifest(passage_index)["stages"]["passages"]["counts"]
                                 ["passages_per_document_mean"]))  # fmt: skip
    sides = searched.side_runs(QUERIES, SearchOptions(mode=mode, k=depth * factor, depth=depth * factor))
    for rule in ("maxp", "firstp", "sump"):
        run = plan(passage_index, mode, rule, depth=depth).first_stage(QUERIES)
        for documents in run.values():
            assert documents and len(documents) <= depth
            assert all("#" not in docid and docid.startswith("L") for docid in documents)
        if mode != "hybrid":  # one side: the run is that side's passage list under the rule
            assert run == aggregate(sides[0], rule, depth), rule
    passages = searched.first_stage(QUERIES)
    assert all(len(hits) == depth and all("#" in pid for pid in hits) for hits in passages.values())
    # the rules on a real passage list: MaxP the best passage, FirstP the lowest-numbered, SumP the sum
    side = sides[0]["q1"]
    maxp, firstp, sump = (aggregate({"q1": side}, rule)["q1"] for rule in ("maxp", "firstp", "sump"))
    for docid in maxp:
        mine = {
            int(pid.rpartition("#")[2]): score for pid, score in side.items() if pid.startswith(docid + "#")
        }
        assert maxp[docid] == max(mine.values()) and firstp[docid] == mine[min(mine)]
        assert sump[docid] == pytest.approx(sum(mine.values()))


def test_a_document_index_refuses_aggregation(sample: Path, tmp_path: Path) -> None:
    index = tmp_path / "documents"
    build_index(sample, index, bm25_only=True)
    with pytest.raises(OptionError, match="aggregate maxp: applies to a passage index"):
        plan(index, "bm25", "maxp")
    with pytest.raises(OptionError, match="rerank_passages 2: applies to a passage index"):
        plan(index, "bm25", None, rerank_passages=2)
    assert plan(index, "bm25", "none").passages is None  # none on whole documents: a document run as before
    assert "passages" not in read_manifest(index)["stages"]
    assert "store" not in read_manifest(index)["stages"]["bm25"]["params"]


@pytest.mark.slow
def test_reranker_scores_the_best_passages_and_splices(
    passage_index: Path, qwen_reranker_folder: Path
) -> None:
    from lyre.models.reranker import Reranker

    head, per_document = 5, 2
    first = plan(passage_index, "hybrid", "maxp")
    run, passage_list = first.passage_first_stage(QUERIES, keep_passages=True)
    reranked = plan(
        passage_index, "hybrid", "maxp", reranker=qwen_reranker_folder, rerank_depth=head,
        rerank_passages=per_document,
    ).search(QUERIES)  # fmt: skip
    model = Reranker.from_pretrained(qwen_reranker_folder)
    store = PassageStore.open(passage_index).store
    texts = {query.qid: query.text for query in QUERIES}
    for qid, documents in run.items():
        ordered = rank_order(documents)
        expected = {}
        for docid, _ in ordered[:head]:
            mine = {pid: s for pid, s in passage_list[qid].items() if parse_passage_id(pid)[0] == docid}  # type: ignore[index]
            best = [pid for pid, _ in rank_order(mine)[:per_document]]
            passages: list[Document] = store.fetch(store.rows_of(best))
            scores = model.score_pairs([(texts[qid], document_text(p)) for p in passages])
            expected[docid] = max(float(np.float32(s)) for s in scores)
        got = rank_order(reranked[qid])
        assert {docid for docid, _ in got[:head]} == set(expected)
        for docid, score in got[:head]:
            assert score == pytest.approx(expected[docid], abs=1e-6)
        assert [docid for docid, _ in got[head:]] == [docid for docid, _ in ordered if docid not in expected]


def test_cli_search_writes_the_passage_settings_in_the_sidecar(
    lyre: LyreCli, passage_index: Path, sample: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q.qid, "text": q.text}) + "\n" for q in QUERIES))
    out = tmp_path / "bm25.run"
    lyre("search", "--index", passage_index, "--queries", queries, "--out", out, "--mode", "bm25",
         "--rerank-depth", "0", "--k", "10", "--depth", "10", "--aggregate", "sump")  # fmt: skip
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    factor = meta["passages"]["depth_factor"]
    assert meta["passages"]["aggregate"] == "sump" and meta["passages"]["passage_depth"] == 10 * factor
    assert all("#" not in docid for docs in read_run(out).values() for docid in docs)


# Kill-and-rerun, as tests/test_resume.py does for document indexes, with a tiny random BERT (MiniLM's
# tokenizer) so encoding is quick and the passages stage long enough to be caught.

KILL_DOCUMENTS = 4000


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


def kill_when(command: list[str], ready: Callable[[], bool]) -> int:
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    return process.wait()


def index_files(index: Path) -> dict[str, bytes]:
    """Every file of the passages, BM25 and embeddings stages (completion records hold timings)."""
    return {
        str(path.relative_to(index)): path.read_bytes()
        for folder in ("passages", "bm25", "embeddings")
        for path in sorted((index / folder).rglob("*"))
        if path.is_file() and not path.name.endswith((".done.json", "bm25.json"))
    }


@pytest.mark.slow
def test_a_passage_index_survives_kill_and_rerun(lyre: LyreCli, tmp_path: Path) -> None:
    model = save_tiny_bert(tmp_path / "tiny-bert")
    corpus = write_corpus(tmp_path / "corpus.jsonl", KILL_DOCUMENTS, max_words=60)

    def command(index: Path) -> list[str]:
        return lyre.argv("index", corpus, "--out", index, "--embed-model", model, "--index-type", "flat",
                         "--passage-tokens", "24", "--passage-stride", "16")  # fmt: skip

    def stages(index: Path) -> set[str]:
        return {name for name, record in read_manifest(index)["stages"].items() if record.get("complete")}

    reference = tmp_path / "reference"
    assert subprocess.run(command(reference), env=environment(), capture_output=True).returncode == 0
    index = tmp_path / "interrupted"
    in_passages = lambda: any(index.glob(".passages.*"))  # noqa: E731
    in_encode = lambda: (index / "embeddings" / "store.json").exists()  # noqa: E731
    for ready in (in_passages, in_encode):
        assert kill_when(command(index), ready) == -signal.SIGKILL
    assert "embeddings" not in stages(index) and "passages" in stages(index)
    assert subprocess.run(command(index), env=environment(), capture_output=True).returncode == 0
    assert stages(index) == stages(reference) == {"docstore", "passages", "bm25", "embeddings", "dense"}
    assert index_files(index) == index_files(reference)
    queries = [Query("a", "protein cell growth"), Query("b", "vaccine immune response")]
    for mode in ("bm25", "dense", "hybrid"):
        runs = [plan(folder, mode, None).first_stage(queries) for folder in (index, reference)]
        assert runs[0] == runs[1] and runs[0]["a"], mode


def test_stride_without_size_is_refused_before_any_work(sample: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="passage_stride 8: needs"):
        build_index(sample, tmp_path / "never", passages=PassageOptions(passage_stride=8))
    assert not (tmp_path / "never").exists()
    with pytest.raises(LyreError, match="longer than the model reads"):
        build_index(sample, tmp_path / "never", encode=EncodeOptions(embed_model=MODEL),
                    passages=PassageOptions(passage_tokens=4096))  # fmt: skip
    assert not (tmp_path / "never").exists()
