"""Queries a BM25 index cannot answer are said once per search (issue 18, class 12): a Chinese query on
the English analyzer, a query of stopwords. The warning counts them, shows one, names the analyzer and the
one to build the index with; it is printed under ``--quiet`` and for a search answered from the cache.
An index built with that analyzer answers the query, without a warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPOSITORY, LyreCli
from lyre.formats.runs import read_run

DOCUMENTS = [
    {"_id": "d1", "title": "Bread", "text": "Sourdough bread rises slowly overnight."},
    {"_id": "d2", "title": "天气", "text": "今天北京天气很好，适合散步。"},
    {"_id": "d3", "title": "Chess", "text": "The Najdorf is a sharp Sicilian line."},
]
QUERIES = "q1\tbread rising\nq2\t北京天气\nq3\tthe of and\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("terms")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in DOCUMENTS), "utf-8")
    queries = folder / "queries.tsv"
    queries.write_text(QUERIES, encoding="utf-8")
    return {"folder": folder, "corpus": corpus, "queries": queries}


def search(lyre: LyreCli, index: Path, queries: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return lyre(
        "-q", "search", "--index", index, "--queries", queries, "--mode", "bm25", "--rerank-depth", "0",
        "--out", out,
    )  # fmt: skip


@pytest.mark.slow
def test_queries_without_a_known_term_are_warned_about_once_with_the_analyzer_to_use(corpus, lyre) -> None:
    index = corpus["folder"] / "english"
    lyre("-q", "index", corpus["corpus"], "--out", index, "--bm25-only")
    warning = (
        f"warning: 2 of 3 queries have no term known to the BM25 index of {index} (analyzer english "
        "(porter stemmer, lucene stopwords)), so BM25 finds nothing for them: e.g. q2 '北京天气'; an index "
        "built with `lyre index CORPUS --out INDEX --analyzer cjk-bigram` may suit them"
    )
    first = search(lyre, index, corpus["queries"], corpus["folder"] / "first.run")
    assert first.stderr.splitlines() == [warning]  # under --quiet too: it changes what the numbers mean
    cached = search(lyre, index, corpus["queries"], corpus["folder"] / "cached.run")
    assert cached.stderr.splitlines() == [warning]  # the lists came from the cache; the warning did not
    assert set(read_run(corpus["folder"] / "first.run")) == {"q1"}  # q2 and q3: no BM25 hit at all


@pytest.mark.slow
def test_the_suggested_analyzer_answers_the_query_without_a_warning(corpus, lyre) -> None:
    index = corpus["folder"] / "cjk"
    lyre("-q", "index", corpus["corpus"], "--out", index, "--bm25-only", "--analyzer", "cjk-bigram")
    only_chinese = corpus["folder"] / "chinese.tsv"
    only_chinese.write_text("q2\t北京天气\n", encoding="utf-8")
    result = search(lyre, index, only_chinese, corpus["folder"] / "cjk.run")
    assert result.stderr == ""
    assert list(read_run(corpus["folder"] / "cjk.run")["q2"]) == ["d2"]


LIMITED_SEARCH = """
import resource, sys
from pathlib import Path
import psutil
from lyre.basics.errors import OptionError
from lyre.formats.records import Query
from lyre.retrieval.options import RerankOptions, SearchOptions
from lyre.retrieval.plan import SearchPlan

plan = SearchPlan.open(Path(sys.argv[1]), SearchOptions(mode="bm25"), RerankOptions(rerank_depth=0))
queries = [Query("q", "bread")] * 1_000_000
room = psutil.Process().memory_info().vms + (128 << 20)
resource.setrlimit(resource.RLIMIT_AS, (room, resource.RLIM_INFINITY))
try:
    plan.search(queries)
except OptionError as error:
    print(error)
"""


@pytest.mark.slow
def test_a_search_whose_lists_would_not_fit_is_refused_before_any_is_made(corpus, lyre) -> None:
    """A million queries x 3 documents (the default depth 1000, capped to the index) need about 0.9 GiB of
    lists; with 128 MiB of address space left the search is refused in one line naming depth."""
    index = corpus["folder"] / "memory"
    lyre("-q", "index", corpus["corpus"], "--out", index, "--bm25-only")
    child = subprocess.run(
        [sys.executable, "-c", LIMITED_SEARCH, str(index)], capture_output=True, text=True, cwd=REPOSITORY
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith(
        "depth 3: 1,000,000 queries x 3 results x 1 side would need about 915.5 MiB of memory, and "
    )
    assert child.stdout.strip().endswith("is available; lower it, or search the queries in parts")
