"""The ingest stage: corpus file -> ``INDEX/docstore`` plus the manifest's "docstore" record.

The new docstore is written into a temporary folder inside INDEX and renamed into place only when it
is complete, so a bad record or a crash never leaves a half-written docstore and never destroys a
complete one. Replacing a complete docstore needs ``overwrite=True``; because row numbers are the
internal ids, that also clears the records of the stages built on the old one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from basics import progress
from basics.atomic import replace_dir
from basics.errors import InputError, LyreError
from basics.provenance import provenance, sha256_file
from formats.corpus import CorpusReader, UniqueIds, open_corpus
from indexes.docstore import DocStoreWriter

STAGE = "docstore"
BATCH_SIZE = 4096


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did (the CLI prints it; the manifest stores the same facts)."""

    corpus: str
    docstore: str
    format: str
    mapping: dict[str, str | None]
    documents: int
    skipped: dict[str, int] = field(default_factory=dict)
    empty_text: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the CLI: count, fields, skips and empty texts, where it went."""
        fields = " ".join(f"{k}={v or '(none)'}" for k, v in self.mapping.items())
        skipped = ", ".join(f"{k}: {v:,}" for k, v in self.skipped.items())
        return (
            f"{self.documents:,} documents ({self.format}; {fields}) -> {self.docstore}"
            + f" in {self.seconds:.1f}s"
            + (f"; skipped {skipped}" if skipped else "")
            + (f"; {self.empty_text:,} with empty text" if self.empty_text else "")
        )


def _check_destination(index_dir: Path, overwrite: bool) -> None:
    from indexes.manifest import stage_record

    target = index_dir / STAGE
    if target.exists() and stage_record(index_dir, STAGE) is not None and not overwrite:
        raise LyreError(
            f"{target}: a complete docstore exists already; pass --overwrite to replace it "
            "(this also invalidates the index stages built on it)"
        )
    for stale in index_dir.glob(f".{STAGE}.*.tmp"):  # left by a killed ingest; never renamed into place
        shutil.rmtree(stale, ignore_errors=True)


def _copy_documents(
    reader: CorpusReader, writer: DocStoreWriter
) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
    """Stream the corpus into the writer with duplicate-id checks; returns (empty-text count, id index)."""
    unique = UniqueIds(writer.docids_of)
    total, unit = reader.size
    empty = 0
    with progress.bar(total, "ingest", unit=unit) as bar:
        for batch in reader.batches(BATCH_SIZE):
            earlier = unique.check([doc.docid for _, doc in batch], writer.rows)
            accepted = []
            for (line, doc), first in zip(batch, earlier.tolist(), strict=True):
                if first >= 0:
                    reader.problem(
                        line,
                        "duplicate_id",
                        f"duplicate id {doc.docid!r} (already the id of document {first + 1})",
                        "give every document a unique id, or pass --on-error skip to keep the first",
                    )
                    continue
                accepted.append(doc)
                empty += not doc.text.strip()
            writer.write(accepted)
            bar.update(reader.position() - bar.n)
            bar.set_postfix(docs=writer.rows, refresh=False)
    return empty, unique.sorted_index()


def ingest(
    corpus: str | Path,
    index_dir: str | Path,
    *,
    id_field: str | None = None,
    title_field: str | None = None,
    text_field: str | None = None,
    on_error: str = "fail",
    overwrite: bool = False,
) -> IngestReport:
    """Read ``corpus`` (file or BEIR folder) into ``index_dir/docstore`` and record the "docstore" stage."""
    from indexes.manifest import invalidate, record_stage

    started = time.perf_counter()
    index_dir = Path(index_dir)
    _check_destination(index_dir, overwrite)
    reader = open_corpus(
        corpus, id_field=id_field, title_field=title_field, text_field=text_field, on_error=on_error
    )
    progress.say(f"ingest {reader.path} ({reader.format}): fields {reader.mapping.describe()}")
    index_dir.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".docstore.", suffix=".tmp", dir=index_dir))
    umask = os.umask(0)
    os.umask(umask)
    temp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the docstore should be as readable as INDEX
    try:
        writer = DocStoreWriter(temp)
        try:
            empty, id_index = _copy_documents(reader, writer)
        except BaseException:
            writer.abort()
            raise
        if writer.rows == 0:
            raise InputError(
                reader.path, None, "no documents were read", "check the file and the field mapping"
            )
        writer.close(id_index)
        skipped = reader.skipped
        record = {
            "corpus": str(Path(corpus).resolve()),
            "corpus_file": str(reader.path.resolve()),
            "corpus_sha256": sha256_file(reader.path),
            "corpus_size": reader.path.stat().st_size,
            "corpus_mtime_ns": reader.path.stat().st_mtime_ns,
            "format": reader.format,
            "mapping": reader.mapping.to_dict(),
            "documents": writer.rows,
            "skipped": dict(sorted(skipped.items())),
            "empty_text": empty,
            "on_error": on_error,
            "provenance": provenance(corpus=str(corpus), on_error=on_error, **reader.mapping.to_dict()),
        }
        invalidate(index_dir, STAGE)  # the derived stages' files describe the old rows
        replace_dir(temp, index_dir / STAGE)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    record_stage(index_dir, STAGE, record)
    seconds = time.perf_counter() - started
    report = IngestReport(
        corpus=str(corpus),
        docstore=str(index_dir / STAGE),
        format=reader.format,
        mapping=reader.mapping.to_dict(),
        documents=writer.rows,
        skipped=record["skipped"],
        empty_text=empty,
        seconds=round(seconds, 3),
    )
    skipped_total = sum(skipped.values())
    progress.say(
        f"ingested {writer.rows:,} documents in {seconds:.1f}s"
        + (
            f"; skipped {skipped_total:,} ({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))})"
            if skipped_total
            else ""
        )
        + (f"; {empty:,} with empty text" if empty else "")
    )
    return report
