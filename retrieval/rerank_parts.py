"""The work folder of a rerank: each finished group's scores on disk, so a killed run resumes.

Reranking is the slow part of a search (minutes to hours of GPU time), so its results are kept per group
of queries in ``OUT.parts/`` beside the run being written: ``group-000012.npy`` (float32 scores, in the
group's pair order) and then ``group-000012.json``, the completion record. A group counts as done only when
its record is there and carries the group's key: a hash of everything that decides its scores (the
reranker's identity: the fingerprint of its files, its template and settings; and each pair as the reranker
reads it: query id and text, document id and a hash of the document's text). A rerun of the same command
therefore recomputes only the missing groups, and any change of input or model recomputes them all instead
of mixing old scores in: a rerun over another index whose documents have the same ids but other texts
scores every group again. The folder is removed once the run is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lyre.basics.atomic import atomic_path, write_json_atomic

PARTS_SUFFIX = ".parts"


def parts_folder(out: Path) -> Path:
    """Where the groups of the run written to ``out`` are kept until it is written."""
    return out.with_name(out.name + PARTS_SUFFIX)


def group_key(
    identity: str, qids: Sequence[str], docids: Sequence[str], pairs: Sequence[tuple[str, str]]
) -> str:
    """The key of one group: ``identity`` (the reranker's) and each pair, in order: its query id, document
    id, query text and a hash of the document text the reranker reads (``pairs``: (query, document))."""
    digest = hashlib.sha256(identity.encode("utf-8"))
    for qid, docid, (query, document) in zip(qids, docids, pairs, strict=True):
        text = hashlib.sha256(document.encode("utf-8")).hexdigest()
        digest.update(json.dumps([qid, docid, query, text]).encode("utf-8"))
    return digest.hexdigest()


class GroupScores:
    """Finished groups of one rerank, stored in ``folder`` (created on the first save)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _paths(self, number: int) -> tuple[Path, Path]:
        stem = self.folder / f"group-{number:06d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def load(self, number: int, key: str, pairs: int) -> np.ndarray | None:
        """The scores of group ``number`` if it was finished with this ``key``; None to compute them."""
        scores_path, record_path = self._paths(number)
        try:
            record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") != key or record.get("pairs") != pairs:
                return None
            scores = np.load(scores_path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # absent, or damaged by a kill mid-write: recompute
        return scores if scores.shape == (pairs,) and scores.dtype == np.float32 else None

    def save(self, number: int, key: str, scores: np.ndarray) -> None:
        """Write the scores, then the completion record (each atomically, the record last)."""
        scores_path, record_path = self._paths(number)
        with atomic_path(scores_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(scores, dtype=np.float32), allow_pickle=False)
        write_json_atomic(record_path, {"key": key, "pairs": len(scores)})

    def done(self) -> list[int]:
        """Numbers of the groups with a completion record (whatever their key)."""
        return sorted(int(path.stem.removeprefix("group-")) for path in self.folder.glob("group-*.json"))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
