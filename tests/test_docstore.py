import numpy as np
import pytest
from lyre.basics.errors import LyreError
from lyre.formats.corpus import UniqueIds
from lyre.formats.records import Document
from lyre.indexes.docstore import DocStore, DocStoreWriter

N = 1000


def _docs(n: int = N) -> list[Document]:
    return [Document(f"doc-{i}", f"title {i}" if i % 3 else "", f"text of {i} " * (i % 7)) for i in range(n)]


@pytest.fixture
def store(tmp_path) -> DocStore:
    writer = DocStoreWriter(tmp_path / "docstore", rows_per_part=128, row_group_rows=16)
    unique = UniqueIds(writer.docids_of)
    docs = _docs()
    for start in range(0, N, 97):  # uneven batches cross row-group and part boundaries
        batch = docs[start : start + 97]
        assert unique.check([d.docid for d in batch], writer.rows).tolist() == [-1] * len(batch)
        writer.write(batch)
    meta = writer.close(unique.sorted_index())
    assert meta.rows == N and [p.rows for p in meta.parts] == [128] * 7 + [N - 7 * 128]
    return DocStore.open(tmp_path)  # the INDEX folder works as well as INDEX/docstore


def test_length_docids_and_fetch(store):
    docs = _docs()
    assert len(store) == N
    assert store.docids() == [d.docid for d in docs]
    rows = np.array([999, 0, 127, 128, 500, 500, 16, 15])
    assert store.fetch(rows) == [docs[r] for r in rows]
    assert store.docids_of(rows) == [docs[r].docid for r in rows]
    assert store.fetch([]) == []


def test_rows_of_maps_docids_back_and_unknown_to_minus_one(store):
    assert store.rows_of(["doc-5", "nope", "doc-999", "doc-128"]).tolist() == [5, -1, 999, 128]


def test_iter_batches_streams_any_range(store):
    docs = _docs()
    for start, stop, size in [(0, None, 100), (130, 517, 64), (990, 2000, 7), (5, 6, 10)]:
        batches = list(store.iter_batches(size, start=start, stop=stop))
        end = min(stop or N, N)
        assert [first for first, _ in batches] == list(range(start, end, size))
        assert all(len(b) == size for _, b in batches[:-1])
        assert [d for _, b in batches for d in b] == docs[start:end]


def test_out_of_range_rows_raise(store):
    with pytest.raises(IndexError):
        store.fetch([N])
    with pytest.raises(IndexError):
        store.docids_of([-1])


def test_writer_resolves_docids_of_closed_parts_and_pending_rows(tmp_path):
    writer = DocStoreWriter(tmp_path, rows_per_part=32, row_group_rows=8)
    docs = _docs(100)
    writer.write(docs)
    assert writer.docids_of(np.array([0, 31, 40, 99])) == ["doc-0", "doc-31", "doc-40", "doc-99"]
    writer.abort()


def test_open_without_docstore_says_how_to_build(tmp_path):
    with pytest.raises(LyreError, match="no docstore here; build one with `lyre index CORPUS --out INDEX`"):
        DocStore.open(tmp_path)
