"""Index metadata under faults (issue 18, class 10): every JSON file an index holds read through one reader.

Each JSON file of an index (the manifest, ``docstore.json``, BM25's four files, the dense build and search
parameters, the embedding store's spec) is damaged every way a disk or a hand can: a flipped byte that
breaks the JSON, a flipped byte that still parses (only the recorded SHA-256 sees it), a value of the wrong
type, a missing key, truncated, emptied. A search must refuse in one line naming the file and
``lyre index ... --verify``, never give a traceback or a silently wrong ranking; ``--verify`` (for a stage
file, a plain ``lyre index`` too) rebuilds it, after which the search gives the reference run again.

One BM25-only index of the sample is built once per module and copied per case; a tiny dense index (the
``tiny_bert`` fixture) for the dense files. The end-to-end cases run `lyre` as a user does; the full
matrix runs in-process through :func:`indexes.open_index.open_for_search` and the loaders, which is what
the commands call.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import REPOSITORY, SAMPLE, LyreCli, change_at, one_line_error
from lyre.basics.errors import LyreError
from lyre.indexes.bm25_format import read_vocabulary
from lyre.indexes.bm25_search import BM25Index
from lyre.indexes.dense_search import DenseIndex
from lyre.indexes.docstore import DocStore
from lyre.indexes.embeddings import EmbeddingStore
from lyre.indexes.integrity import file_entries
from lyre.indexes.manifest import load_manifest, record_stage
from lyre.indexes.metadata import MetadataError
from lyre.indexes.open_index import open_for_search

CORPUS = SAMPLE / "corpus.jsonl"
QUERIES = SAMPLE / "queries.tsv"
SEARCH = [
    "--queries",
    QUERIES,
    "--mode",
    "bm25",
    "--rerank-depth",
    "0",
    "--k",
    "20",
    "--depth",
    "20",
    "--no-cache",
]
BM25_FILES = {
    "docstore/docstore.json": ("docstore", "rows"),
    "bm25/params.index.json": ("bm25", "num_docs"),
    "bm25/vocab.index.json": ("bm25", None),
    "bm25/analyzer.json": ("bm25", "lowercase"),
    "bm25/bm25.json": ("bm25", "documents"),
}
"""Each JSON file of a BM25 index: its stage, and the key the wrong-type and missing-key cases change
(None: the vocabulary, whose first term is changed)."""
DENSE_FILES = {
    "dense/params.json": ("dense", "shards"),
    "dense/build.json": ("dense", "dim"),
    "embeddings/store.json": ("embeddings", "chunk_rows"),
}


def _breaks_json(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x06]) + data[1:]  # the opening { becomes }


def _still_parses(data: bytes) -> bytes:
    """A flipped bit in the last digit (0 <-> 1, 2 <-> 3...): the same size, still valid JSON."""
    at = max(data.rfind(digit) for digit in b"0123456789")
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _edited(key: str | None, change: Callable[[dict, str], None]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        value = json.loads(data)
        change(value, key if key is not None else next(iter(value)))
        return json.dumps(value, ensure_ascii=False).encode("utf-8")

    return edit


def _wrong_type(key: str | None) -> Callable[[bytes], bytes]:
    return _edited(key, lambda value, name: value.__setitem__(name, "big" if key else "7"))


def _missing(key: str | None) -> Callable[[bytes], bytes]:
    return _edited(key, lambda value, name: value.pop(name))


DAMAGE: dict[str, Callable[[str | None], Callable[[bytes], bytes]]] = {
    "breaks-json": lambda key: _breaks_json,
    "still-parses": lambda key: _still_parses,
    "wrong-type": _wrong_type,
    "missing-key": _missing,
    "truncated": lambda key: lambda data: data[: len(data) // 2],
    "emptied": lambda key: lambda data: b"",
}


def damage(path: Path, how: str, key: str | None) -> None:
    before = path.read_bytes()
    after = DAMAGE[how](key)(before)
    assert after != before
    path.write_bytes(after)


def search(lyre: LyreCli, index: Path, out: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lyre("-q", "search", "--index", index, *SEARCH, "--out", out, check=check)


@pytest.fixture(scope="module")
def bm25_built(tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli) -> tuple[Path, bytes]:
    """The BM25 index of the sample, and the run of its queries (the reference a repaired index gives)."""
    folder = tmp_path_factory.mktemp("bm25")
    lyre("-q", "index", CORPUS, "--out", folder / "index", "--bm25-only")
    search(lyre, folder / "index", folder / "reference.run")
    return folder / "index", (folder / "reference.run").read_bytes()


@pytest.fixture
def bm25_index(bm25_built: tuple[Path, bytes], tmp_path: Path) -> Path:
    shutil.copytree(bm25_built[0], tmp_path / "index")
    return tmp_path / "index"


@pytest.fixture(scope="module")
def dense_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 30 documents of the sample: a dense index of them builds in a few seconds."""
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    corpus.write_text("".join(CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)[:30]))
    return corpus


@pytest.fixture(scope="module")
def dense_built(
    tmp_path_factory: pytest.TempPathFactory, lyre: LyreCli, tiny_bert: Path, dense_corpus: Path
) -> Path:
    index = tmp_path_factory.mktemp("dense") / "index"
    lyre("-q", "index", dense_corpus, "--out", index, "--embed-model", tiny_bert)
    return index


@pytest.fixture
def dense_index(dense_built: Path, tmp_path: Path) -> Path:
    shutil.copytree(dense_built, tmp_path / "index")
    return tmp_path / "index"


def _refused(index: Path, stages: list[str], relative: str, stage: str, loader: Callable | None) -> str:
    """The one line refusing the damaged file on open, checked; the file's own reader refuses it too."""
    with pytest.raises(LyreError) as error, open_for_search(index, stages):
        pass
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{index / relative}: "), message
    assert f"the {stage} stage is damaged" in message and f"--out {index} --verify`" in message, message
    if loader is not None:
        with pytest.raises(LyreError) as error:
            loader(index)
        assert str(error.value).startswith(f"{index / relative}: ") and "--verify`" in str(error.value)
    return message


LOADERS: dict[str, Callable[[Path], object] | None] = {
    "docstore/docstore.json": lambda index: DocStore.open(index / "docstore"),
    "bm25/params.index.json": lambda index: BM25Index.load(index / "bm25"),
    "bm25/vocab.index.json": lambda index: (read_vocabulary(index / "bm25"), BM25Index.load(index / "bm25")),
    "bm25/analyzer.json": lambda index: BM25Index.load(index / "bm25"),
    "bm25/bm25.json": lambda index: BM25Index.load(index / "bm25"),
}
"""What reads each file on its own (a search opens them after the checks of ``open_for_search``; ``lyre
encode``, the passage store and the query-side checks open some of them directly)."""
DENSE_LOADERS: dict[str, Callable[[Path], object] | None] = {
    "dense/params.json": lambda index: DenseIndex.open(index, device="cpu"),
    "dense/build.json": None,  # read only by a dense build resuming (which rebuilds when it is damaged)
    "embeddings/store.json": lambda index: EmbeddingStore.open(index / "embeddings"),
}


# Every file, every damage: refused on open in one line --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("relative", BM25_FILES)
def test_every_damage_to_a_bm25_index_file_is_refused_naming_it_and_verify(
    bm25_index: Path, relative: str, how: str
) -> None:
    stage, key = BM25_FILES[relative]
    damage(bm25_index / relative, how, key)
    message = _refused(bm25_index, ["bm25"], relative, stage, LOADERS[relative])
    if how == "still-parses":
        assert "content changed since it was written (SHA-256 differs)" in message
    assert f"`lyre index {CORPUS} --out {bm25_index} --verify`" in message  # the recorded corpus


@pytest.mark.slow
@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("relative", DENSE_FILES)
def test_every_damage_to_a_dense_index_file_is_refused_naming_it_and_verify(
    dense_index: Path, dense_corpus: Path, tiny_bert: Path, relative: str, how: str
) -> None:
    stage, key = DENSE_FILES[relative]
    damage(dense_index / relative, how, key)
    message = _refused(dense_index, ["bm25", "dense"], relative, stage, DENSE_LOADERS[relative])
    assert f"`lyre index {dense_corpus} --embed-model {tiny_bert} --out {dense_index} --verify`" in message


# What only the typed reader sees: a file recorded as it is, of the wrong shape ---------------------------


def _rerecord(index: Path, relative: str) -> None:
    """Record ``relative`` as it is now, as if lyre had written it so: the hash no longer tells."""
    stage = relative.split("/")[0]
    record = load_manifest(index).stages[stage]
    record_stage(index, stage, replace(record, files={**record.files, **file_entries(index, [relative])}))


PROBLEMS = {
    ("docstore/docstore.json", "wrong-type"): 'rows is a string ("big"), not an integer',
    ("docstore/docstore.json", "missing-key"): "rows is missing",
    ("bm25/params.index.json", "wrong-type"): 'num_docs is a string ("big"), not an integer',
    ("bm25/params.index.json", "missing-key"): "num_docs is missing",
    ("bm25/vocab.index.json", "wrong-type"): 'is a string ("7"), not an integer',
    ("bm25/vocab.index.json", "missing-key"): "holds 2,289 terms, not 2,290",
    ("bm25/analyzer.json", "wrong-type"): 'lowercase is a string ("big"), not true or false',
    ("bm25/analyzer.json", "missing-key"): None,  # lowercase by default, as built: not damage by itself
    ("bm25/bm25.json", "wrong-type"): 'documents is a string ("big"), not an integer',
    ("bm25/bm25.json", "missing-key"): "documents is missing",
}


@pytest.mark.slow
@pytest.mark.parametrize(("relative", "how"), PROBLEMS)
def test_a_recorded_file_of_the_wrong_shape_is_refused_by_its_reader_naming_what(
    bm25_index: Path, relative: str, how: str
) -> None:
    damage(bm25_index / relative, how, BM25_FILES[relative][1])
    _rerecord(bm25_index, relative)
    with open_for_search(bm25_index, ["bm25"]):
        pass  # sizes and hashes agree with the manifest now
    problem = PROBLEMS[relative, how]
    if problem is None:
        LOADERS[relative](bm25_index)  # type: ignore[misc]
        return
    with pytest.raises(MetadataError) as error:
        LOADERS[relative](bm25_index)  # type: ignore[misc]
    message = str(error.value)
    assert message.startswith(f"{bm25_index / relative}: ") and problem in message, message
    assert message.endswith(f"the {BM25_FILES[relative][0]} stage is damaged; rebuild it with "
                            f"`lyre index {CORPUS} --out {bm25_index} --verify`")  # fmt: skip


def test_files_that_disagree_with_each_other_are_refused(bm25_index: Path) -> None:
    """Each file may be well formed and still not belong with the others (from another build)."""
    path = bm25_index / "docstore" / "docstore.json"
    meta = json.loads(path.read_bytes())
    meta["parts"][0]["rows"] = 119
    path.write_text(json.dumps(meta))
    _rerecord(bm25_index, "docstore/docstore.json")
    with pytest.raises(MetadataError, match=r"is inconsistent \(its parts hold 119 rows, not 120\)"):
        DocStore.open(bm25_index / "docstore")


@pytest.mark.slow
def test_a_recorded_store_spec_of_the_wrong_shape_is_refused(dense_index: Path) -> None:
    damage(dense_index / "embeddings" / "store.json", "wrong-type", "chunk_rows")
    _rerecord(dense_index, "embeddings/store.json")
    with pytest.raises(MetadataError, match=r'store\.json: chunk_rows is a string \("big"\), not an integer'):
        EmbeddingStore.open(dense_index / "embeddings")


# The manifest ------------------------------------------------------------------------------------------


def _set(path: tuple[str, ...], new: object) -> Callable[[dict], None]:
    return lambda manifest: change_at(manifest, path, new)


MANIFESTS = {
    "files-null": (_set(("stages", "bm25", "files"), None), "stages.bm25.files is null, not an object"),
    "size-big": (
        _set(("stages", "bm25", "files", "bm25/bm25.json", "size"), "big"),
        'stages.bm25.files["bm25/bm25.json"].size is a string ("big"), not an integer',
    ),
    "params-list": (_set(("stages", "docstore", "params"), []), "stages.docstore.params is a list"),
    "summary-missing": (_set(("stages", "bm25", "summary"), KeyError), "stages.bm25.summary is missing"),
    "analyzer-missing": (
        _set(("stages", "bm25", "params", "analyzer"), KeyError),
        "stages.bm25.params.analyzer is missing",
    ),
    "documents-text": (
        _set(("stages", "docstore", "counts", "documents"), "120"),
        'stages.docstore.counts.documents is a string ("120"), not an integer',
    ),
}


def _damage_manifest(index: Path, change: Callable[[dict], None]) -> Path:
    path = index / "manifest.json"
    manifest = json.loads(path.read_bytes())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))
    return path


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_manifest_of_the_wrong_shape_is_refused_in_one_line(bm25_index: Path, case: str) -> None:
    change, problem = MANIFESTS[case]
    path = _damage_manifest(bm25_index, change)
    with pytest.raises(MetadataError) as error, open_for_search(bm25_index, ["bm25"]):
        pass
    message = str(error.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message, message
    assert message.endswith(f"; rebuild the index with `lyre index CORPUS --out {bm25_index} --verify`")


# End to end, as a user meets it -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("relative", "how"),
    [(relative, ("breaks-json", "still-parses")[number % 2]) for number, relative in enumerate(BM25_FILES)],
)
def test_lyre_search_refuses_a_damaged_file_and_index_repairs_it(
    bm25_index: Path, bm25_built: tuple[Path, bytes], tmp_path: Path, lyre: LyreCli, relative: str, how: str
) -> None:
    """Same-size damage, which a check of sizes alone let through to a traceback."""
    stage, key = BM25_FILES[relative]
    damage(bm25_index / relative, how, key)
    out = tmp_path / "run"
    refused = search(lyre, bm25_index, out, check=False)
    one_line_error(refused, f"error: {bm25_index / relative}: ", f"the {stage} stage is damaged",
                   f"`lyre index {CORPUS} --out {bm25_index} --verify`")  # fmt: skip
    assert not out.exists()
    repaired = lyre("index", CORPUS, "--out", bm25_index, "--bm25-only", "--verify")
    assert (
        f"{bm25_index / relative}: " in repaired.stderr and f"rebuilding the {stage} stage" in repaired.stderr
    )
    search(lyre, bm25_index, out)
    assert out.read_bytes() == bm25_built[1]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["files-null", "size-big", "params-list", "summary-missing"])
def test_lyre_search_and_index_refuse_a_damaged_manifest_and_verify_rebuilds_it(
    bm25_index: Path, bm25_built: tuple[Path, bytes], tmp_path: Path, lyre: LyreCli, case: str
) -> None:
    change, problem = MANIFESTS[case]
    path = _damage_manifest(bm25_index, change)
    repair = f"rebuild the index with `lyre index CORPUS --out {bm25_index} --verify`"
    out = tmp_path / "run"
    one_line_error(search(lyre, bm25_index, out, check=False), f"error: {path}: {problem}", repair)
    index = ["index", CORPUS, "--out", bm25_index, "--bm25-only"]
    one_line_error(lyre("-q", *index, check=False), f"error: {path}: {problem}", repair)
    rebuilt = lyre(*index, "--verify")
    assert f"{path}: {problem}" in rebuilt.stderr and "rebuilding every stage" in rebuilt.stderr
    search(lyre, bm25_index, out)
    assert out.read_bytes() == bm25_built[1]


@pytest.mark.slow
def test_encode_refuses_a_damaged_docstore_record_it_only_reads(
    bm25_index: Path, tiny_bert: Path, lyre: LyreCli
) -> None:
    damage(bm25_index / "docstore" / "docstore.json", "still-parses", None)
    refused = lyre("-q", "encode", "--index", bm25_index, "--embed-model", tiny_bert, check=False)
    one_line_error(refused, f"error: {bm25_index / 'docstore' / 'docstore.json'}: content changed",
                   f"`lyre index {CORPUS} --out {bm25_index} --verify`")  # fmt: skip
    assert not (bm25_index / "embeddings").exists()


@pytest.mark.slow
def test_dense_search_refuses_damaged_dense_params_and_index_repairs_them(
    dense_index: Path, dense_corpus: Path, tiny_bert: Path, tmp_path: Path, lyre: LyreCli
) -> None:
    damage(dense_index / "dense" / "params.json", "still-parses", None)
    dense = ["-q", "search", "--index", dense_index, "--queries", QUERIES, "--mode", "dense"]
    dense += ["--rerank-depth", "0", "--k", "10", "--depth", "10", "--no-cache", "--out", tmp_path / "run"]
    params = dense_index / "dense" / "params.json"
    repair = f"`lyre index {dense_corpus} --embed-model {tiny_bert} --out {dense_index} --verify`"
    one_line_error(lyre(*dense, check=False), f"error: {params}: content changed", repair)
    lyre("-q", "index", dense_corpus, "--out", dense_index, "--embed-model", tiny_bert)
    lyre(*dense)
    assert len((tmp_path / "run").read_text().splitlines()) == 30 * 10


# One reader: no other code parses an index's JSON ---------------------------------------------------------

JSON_READERS_ELSEWHERE = {
    "retrieval/settings_file.py": "a settings file the user passes (--settings), not an index file",
    "retrieval/rerank_parts.py": "the finished rerank groups beside the output run, not an index file",
    "retrieval/cache.py": "cache values, checksummed by indexes/cache_store.py on every read",
}
"""The modules of ``indexes/`` and ``retrieval/`` that call ``json.load(s)`` on something other than an
index's metadata, and what they read."""


def _json_loads_in(path: Path) -> list[int]:
    """Lines of ``path`` that call ``json.load`` or ``json.loads``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("load", "loads")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "json"
    ]


def test_only_the_metadata_reader_parses_json_under_indexes_and_retrieval() -> None:
    found = {
        path.relative_to(REPOSITORY).as_posix(): lines
        for layer in ("indexes", "retrieval")
        for path in sorted((REPOSITORY / layer).rglob("*.py"))
        if (lines := _json_loads_in(path))
    }
    assert set(found) - set(JSON_READERS_ELSEWHERE) == {"indexes/metadata.py"}, found
