"""What a search plan needs of each part it opens: the docstore, BM25, the dense index, the query encoder.

Protocols rather than the concrete classes: a plan holds each part behind
:class:`~retrieval.cache.Deferred` (opened on first use, so a search answered from the cache never loads
BM25, Faiss or torch), and a type checker follows a query through the plan by these signatures without
the heavy modules being imported. :class:`~indexes.docstore.DocStore`,
:class:`~indexes.bm25_search.BM25Index`, :class:`~indexes.dense_search.DenseIndex` and
:class:`~models.embedder.Embedder` are the parts ``lyre search`` opens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from lyre.formats.records import Document
    from lyre.indexes.analyzer import Analyzer
    from lyre.indexes.embeddings import StoreSpec


class DocumentStore(Protocol):
    """The rows a search returns, as document ids and documents (the docstore, or a passage store), and
    the rows of document ids (``lyre serve`` shows documents by id)."""

    def docids_of(self, rows: Any) -> list[str]: ...

    def rows_of(self, docids: Sequence[str]) -> np.ndarray: ...

    def fetch(self, rows: Any) -> list[Document]: ...


class Bm25Searcher(Protocol):
    """A BM25 index: plain and weighted queries, and the statistics feedback reads."""

    analyzer: Analyzer
    num_docs: int

    def search(
        self, query_texts: Sequence[str], k: int, n_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def search_weighted(
        self, queries: Sequence[Mapping[str, float]], k: int, n_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def term_id(self, term: str) -> int: ...

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray: ...

    def collection_frequencies(self, term_ids: np.ndarray) -> np.ndarray: ...


class VectorStore(Protocol):
    """The stored document vectors of a dense index (the embedding chunks)."""

    spec: StoreSpec

    def fetch(self, rows: np.ndarray) -> np.ndarray: ...


class DenseSearcher(Protocol):
    """A dense index: query vectors in, rows and inner-product scores out."""

    @property
    def store(self) -> VectorStore: ...

    def search(
        self, query_vectors: np.ndarray, k: int, nprobe: int | None = None, refine: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class QueryEncoder(Protocol):
    """The model that encoded the index, encoding queries (``task``: the instruction)."""

    def encode_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray: ...


__all__ = ["Bm25Searcher", "DenseSearcher", "DocumentStore", "QueryEncoder", "VectorStore"]
