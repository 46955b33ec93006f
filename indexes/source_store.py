"""Which store a BM25 or embeddings stage reads: the docstore, or the passages of a passage index
(``--passage-tokens``, :mod:`indexes.passage_stage`), and how many rows that store has.

Both stages record the store they read in their params (passages only: document indexes keep the
records they always had), so a search knows whether its hits are documents or passages, and the dense
stage knows how many vectors the embeddings will hold before they exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lyre.indexes.manifest import DOCSTORE
from lyre.indexes.metadata import StageRecord


def store_rows(record: StageRecord) -> int:
    """Rows of the store a stage record describes: passages for the passages stage, else documents."""
    return int(record.counts.get("passages", record.counts["documents"]))


def index_store(record: StageRecord | Mapping[str, Any] | None) -> str:
    """Which store (``docstore`` or ``passages``) the BM25 or embeddings stage of ``record`` was built
    over; records without the key predate passages and read the docstore."""
    if record is None:
        return DOCSTORE
    params = record.params if isinstance(record, StageRecord) else record.get("params", {})
    return str(params.get("store", DOCSTORE))


def store_params(store: str) -> dict[str, Any]:
    """What a BM25 or embeddings record adds to its params for the store it reads: nothing for the
    docstore (document indexes keep their records as before), the store's name for passages."""
    return {} if store == DOCSTORE else {"store": store}
