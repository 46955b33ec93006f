"""lyre's use of bm25s: the supported version range, the private scoring helpers checked against bm25s'
public scoring, and JAX kept out of the process (a stub ``jax`` package proves nothing imports it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from lyre.basics.errors import LyreError
from lyre.indexes import bm25s_compat
from lyre.indexes.bm25_build import METHODS

if TYPE_CHECKING:
    from helpers import LyreCli

REPOSITORY = Path(__file__).resolve().parents[1]

CORPUS = [
    "the cat sat on the mat",
    "a dog chased the cat across the garden",
    "cats and dogs",
    "the garden is green green green",
    "mat",
]
QUERIES = [["cat", "mat"], ["garden", "green", "dog"], ["cat", "cat"], ["unseen"]]


def test_requirement_and_pyproject_pin_agree() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert bm25s_compat.requirement() == "bm25s>=0.2.6,<0.4"
    assert bm25s_compat.requirement() in project["dependencies"]


@pytest.mark.parametrize("version", ["0.2.6", "0.2.7.post1", "0.3.2.post1", "0.3.16", "0.3.99"])
def test_versions_inside_the_range_are_accepted(version: str) -> None:
    assert bm25s_compat.check_version(version) == version


@pytest.mark.parametrize("version", ["0.2.5", "0.1.10", "0.4.0", "0.4.0rc1", "1.0"])
def test_versions_outside_the_range_are_one_line_errors(version: str) -> None:
    with pytest.raises(LyreError) as error:
        bm25s_compat.check_version(version)
    message = str(error.value)
    assert f"bm25s {version} is installed" in message and "bm25s>=0.2.6,<0.4" in message
    assert "\n" not in message


def test_the_installed_bm25s_is_in_the_range() -> None:
    assert bm25s_compat.check_version() == metadata.version("bm25s")


@pytest.mark.parametrize("method", METHODS)
def test_private_scorers_give_the_scores_of_bm25s_public_index(method: str) -> None:
    """Scores from the compat helpers, written out as BM25's sum over query terms of idf x tf part,
    equal ``bm25s.BM25(...).index(...).get_scores(...)`` for every method, absent terms included (bm25l
    and bm25+ give them a non-zero tf part)."""
    bm25s = bm25s_compat.import_bm25s()
    k1, b, delta = 1.2, 0.6, 0.7
    tokens = [text.split() for text in CORPUS]
    public = bm25s.BM25(k1=k1, b=b, delta=delta, method=method)
    public.index(tokens, show_progress=False)

    vocabulary = sorted({token for document in tokens for token in document})
    tf = np.array([[document.count(term) for term in vocabulary] for document in tokens], dtype=np.float64)
    lengths = tf.sum(axis=1)
    idf_of, tfc = bm25s_compat.idf_scorer(method), bm25s_compat.tf_scorer(method)
    idf = np.array([idf_of(int((tf[:, j] > 0).sum()), N=len(tokens)) for j in range(len(vocabulary))])
    weights = idf * tfc(tf_array=tf, l_d=lengths[:, None], l_avg=lengths.mean(), k1=k1, b=b, delta=delta)
    for query in QUERIES:
        columns = [vocabulary.index(term) for term in query if term in vocabulary]
        expected = weights[:, columns].sum(axis=1)
        np.testing.assert_allclose(public.get_scores(query), expected, rtol=1e-5, atol=1e-6)


JAX_STUB = """
from pathlib import Path
Path({marker!r}).open("a").write({line!r} + "\\n")
"""
JAX_LAX_STUB = (
    JAX_STUB
    + """
def top_k(operand, k):
    Path({marker!r}).open("a").write("jax.lax.top_k called\\n")
    return operand, k
"""
)


@pytest.fixture
def jax_stub(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose ``jax`` is a stub that logs its import (and any ``jax.lax.top_k`` call) to
    the returned marker file; it shadows a real JAX, so the test means the same with or without one."""
    marker = tmp_path / "jax-was-touched.log"
    package = tmp_path / "stub" / "jax"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(JAX_STUB.format(marker=str(marker), line="import jax"))
    (package / "lax.py").write_text(JAX_LAX_STUB.format(marker=str(marker), line="import jax.lax"))
    path = os.pathsep.join([str(tmp_path / "stub"), str(REPOSITORY), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}, marker


def run_python(code: str, env: dict[str, str], *args: str | Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPOSITORY,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_stub_is_what_a_plain_bm25s_import_would_touch(jax_stub: tuple[dict[str, str], Path]) -> None:
    """The control: imported directly, bm25s imports the stub and calls ``jax.lax.top_k``, so the
    isolation tests below would see a leak."""
    env, marker = jax_stub
    run_python("import bm25s", env)
    assert marker.read_text().splitlines() == ["import jax", "import jax.lax", "jax.lax.top_k called"]


LIBRARY_BM25 = """
import json, sys
from pathlib import Path
from lyre.formats.queries import read_queries
from lyre.formats.records import Document
from lyre.indexes.analyzer import Analyzer
from lyre.indexes.bm25_build import build_bm25
from lyre.indexes.bm25_search import BM25Index

sample, out = Path(sys.argv[1]), Path(sys.argv[2])
with open(sample / "corpus.jsonl", encoding="utf-8") as lines:
    documents = [Document(r["_id"], r["title"], r["text"]) for r in map(json.loads, lines)]


class Documents:
    def __len__(self):
        return len(documents)

    def iter_batches(self, batch_size):
        for first in range(0, len(documents), batch_size):
            yield first, documents[first : first + batch_size]


build_bm25(Documents(), out, analyzer=Analyzer(stopwords="bm25s-en"), batch_size=32)
rows, _ = BM25Index.load(out).search([query.text for query in read_queries(sample / "queries.tsv")], k=5)
print(json.dumps({"queries": len(rows), "hits": int((rows >= 0).sum())}))
"""


def test_bm25_build_and_search_through_the_library_never_touch_jax(
    jax_stub: tuple[dict[str, str], Path], sample: Path, tmp_path: Path
) -> None:
    """lyre's BM25 API (a bm25s stopword list, the streamed build, the memory-mapped load and search)
    with the stub first on the path: the stub is never imported."""
    env, marker = jax_stub
    output = run_python(LIBRARY_BM25, env, sample, tmp_path / "bm25")
    summary = json.loads(output.splitlines()[-1])
    assert summary["queries"] > 0 and summary["hits"] > 0
    assert not marker.exists(), marker.read_text()


@pytest.mark.slow
def test_bm25_index_and_search_never_touch_jax(
    jax_stub: tuple[dict[str, str], Path], lyre: LyreCli, sample: Path, tmp_path: Path
) -> None:
    """Index the sample with BM25 (with a bm25s stopword list, so the analyzer's bm25s import is on the
    path too) and search it, all as a user runs lyre, with the stub first on the path."""
    env, marker = jax_stub
    index, run = tmp_path / "index", tmp_path / "bm25.run"
    lyre(
        "-q",
        "index",
        sample / "corpus.jsonl",
        "--out",
        index,
        "--bm25-only",
        "--stopwords",
        "bm25s-en",
        env=env,
    )
    lyre(
        "-q", "search", "--index", index, "--queries", sample / "queries.tsv", "--mode", "bm25",
        "--rerank-depth", "0", "--out", run, env=env,
    )  # fmt: skip
    assert run.stat().st_size > 0
    assert not marker.exists(), marker.read_text()


def test_jax_imported_by_the_caller_is_hidden_from_bm25s_and_kept(
    jax_stub: tuple[dict[str, str], Path],
) -> None:
    """A caller that imported JAX itself keeps it, but bm25s still does not initialise it (no top_k)."""
    env, marker = jax_stub
    probe = (
        "import json, sys, jax\n"
        "from indexes.bm25s_compat import import_bm25s\n"
        "bm25s = import_bm25s()\n"
        "import jax as again\n"
        "print(json.dumps([bm25s.selection.JAX_IS_AVAILABLE, again is jax, sys.modules.get('jax.lax')]))\n"
    )
    assert json.loads(run_python(probe, env)) == [False, True, None]
    assert marker.read_text().splitlines() == ["import jax"]
