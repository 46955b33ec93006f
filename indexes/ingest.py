"""The ingest stage: corpus file -> ``INDEX/docstore`` plus the manifest's "docstore" record.

The new docstore is written into a temporary folder inside INDEX and swapped into place only when it
is complete, so a bad record or a crash never leaves a half-written docstore and never destroys a
complete one. Replacing a complete docstore built from another corpus (or with other field options)
needs ``overwrite``; because row numbers are the internal ids, that also invalidates the stages built on
the old one. A write that fails (disk full, quota, read-only folder) is one line naming the docstore, and
the temporary folder is removed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from lyre.basics import progress
from lyre.basics.atomic import replace_dir, temp_dir_beside
from lyre.basics.declared import option
from lyre.basics.errors import InputError, LyreError, opt
from lyre.basics.numbers import count, seconds
from lyre.basics.provenance import provenance, sha256_file
from lyre.formats.corpus import CorpusReader, UniqueIds, corpus_file, open_corpus
from lyre.formats.irds import irds_id, source_record
from lyre.indexes.docstore import DocStoreWriter
from lyre.indexes.manifest import DOCSTORE
from lyre.indexes.metadata import StageRecord
from lyre.indexes.stages import Invalidate, StageResult, Upstream, overwrite_option, run_stage, stage_files

BATCH_SIZE = 4096


@dataclass(frozen=True)
class IngestOptions:
    """How a corpus is read into the docstore."""

    id_field: str | None = option(None, "Corpus field holding the document id (default: guessed).")
    title_field: str | None = option(None, "Corpus field holding the title (default: guessed).")
    text_field: str | None = option(None, "Corpus field holding the text (default: guessed).")
    on_error: str = option(
        "fail", "fail: stop at the first bad document; skip: skip and count them.", choices=("fail", "skip")
    )
    overwrite: bool = overwrite_option()

    def params(self) -> dict[str, Any]:
        """The options that decide the docstore's content."""
        return {name: value for name, value in asdict(self).items() if name != "overwrite"}


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
                        f"give every document a unique id, or set {opt('on_error')} skip to keep the first",
                    )
                    continue
                accepted.append(doc)
                empty += not doc.text.strip()
            writer.write(accepted)
            bar.update(reader.position() - bar.n)
            bar.set_postfix(docs=writer.rows, refresh=False)
    return empty, unique.sorted_index()


def _corpus_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "corpus_file": str(path.resolve()),
        "corpus_size": stat.st_size,
        "corpus_mtime_ns": stat.st_mtime_ns,
    }


def _corpus_source(corpus: Path) -> dict[str, Any]:
    """How the record names the corpus: its absolute path, or an ``irds:`` id as given with the
    ir_datasets version and the hash and count of the documents read (``formats.irds.source_record``)."""
    if irds_id(corpus) is None:
        return {"corpus": str(Path(corpus).resolve())}
    return {"corpus": str(corpus), "corpus_source": source_record(corpus, "docs")}


def _same_corpus(params: dict[str, Any], path: Path) -> bool:
    """Whether the docstore was built from this file. Same path, size and mtime count as the same file (as
    for make and rsync), so a rerun of a 50 GB corpus, or each task of a job array, does not hash it again;
    anything else is decided by the sha256."""
    unchanged = all(params.get(key) == value for key, value in _corpus_identity(path).items())
    return unchanged or params.get("corpus_sha256") == sha256_file(path)


@dataclass
class IngestStage:
    """Corpus -> docstore."""

    corpus: Path
    name: ClassVar[str] = DOCSTORE

    def _changes(self, record: StageRecord, options: IngestOptions) -> list[str]:
        """What differs between the recorded docstore and these options and corpus."""
        changed = [key for key, value in options.params().items() if record.params.get(key) != value]
        if not _same_corpus(record.params, corpus_file(self.corpus)):
            changed.insert(0, "corpus")
        return changed

    def validate(self, index_dir: Path, options: IngestOptions, upstream: Upstream) -> None:
        corpus_file(self.corpus)  # a missing corpus or a BEIR folder without corpus.jsonl, in one line
        record = upstream.get(DOCSTORE)
        if record is None or options.overwrite:
            return
        changed = self._changes(record, options)
        if changed:
            what = "another corpus (or the corpus changed)" if changed[0] == "corpus" else "other options"
            raise LyreError(
                f"{index_dir}: was built from {what}: {', '.join(changed)} differ; set {opt('overwrite')} "
                f"to rebuild it (and every stage built on it), or choose another {opt('out')}"
            )

    def is_current(self, index_dir: Path, record: StageRecord, options: IngestOptions) -> bool:
        return not self._changes(record, options)

    def count_documents(self, options: IngestOptions, limit: int) -> int:
        """The corpus's documents, read as ingest reads them and counted up to ``limit``: what a later
        stage checks its options against before any work (``DenseStage.count_corpus``). Stopping at the
        count that decides keeps it cheap (256 records for an IVF-PQ index); a bad record is refused here
        as ingest would refuse it (or skipped, with ``on_error`` skip)."""
        return sum(1 for _ in islice(self._reader(options), limit))

    def _reader(self, options: IngestOptions) -> CorpusReader:
        """The corpus opened with the field mapping and error policy of ``options``."""
        return open_corpus(
            self.corpus,
            id_field=options.id_field,
            title_field=options.title_field,
            text_field=options.text_field,
            on_error=options.on_error,
        )

    def build(self, index_dir: Path, options: IngestOptions, invalidate: Invalidate) -> StageResult:
        started = time.perf_counter()
        reader = self._reader(options)
        progress.say(f"ingest {reader.path} ({reader.format}): fields {reader.mapping.describe()}")
        temp = temp_dir_beside(index_dir / DOCSTORE)  # a killed ingest's is swept under the write lock
        try:
            writer = DocStoreWriter(temp, final=index_dir / DOCSTORE)
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
            params = {
                **options.params(),
                **_corpus_source(self.corpus),
                **_corpus_identity(reader.path),
                "corpus_sha256": sha256_file(reader.path),
                "format": reader.format,
                "mapping": reader.mapping.to_dict(),
            }
            invalidate()  # the derived stages' files describe the old rows
            replace_dir(temp, index_dir / DOCSTORE)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        took = time.perf_counter() - started
        skipped = dict(sorted(reader.skipped.items()))
        counts = {
            "documents": writer.rows,
            "skipped": skipped,
            "empty_text": empty,
            "seconds": round(took, 3),
        }
        described = _summary(counts, reader.format, reader.mapping.describe())
        progress.say(f"ingested {count(writer.rows, 'documents')} in {seconds(took)}")
        record = StageRecord(
            summary=described,
            params=params,
            counts=counts,
            provenance=provenance(corpus=str(self.corpus), **options.params()),
            files=stage_files(index_dir, DOCSTORE),
        )
        return StageResult(f"{DOCSTORE}: {described} -> {index_dir / DOCSTORE} in {seconds(took)}", record)


def _summary(counts: dict[str, Any], fmt: str, fields: str) -> str:
    """Count, format and fields, skips and empty texts. Not where the docstore went: the record travels
    with the index when it is copied, and its summary must stay true there."""
    skipped = ", ".join(f"{kind}: {count(number)}" for kind, number in counts["skipped"].items())
    return (
        f"{count(counts['documents'], 'documents')} ({fmt}; {fields})"
        + (f"; skipped {skipped}" if skipped else "")
        + (f"; {count(counts['empty_text'])} with empty text" if counts["empty_text"] else "")
    )


def ingest(
    corpus: str | Path, index_dir: str | Path, options: IngestOptions | None = None, *, wait: bool = False
) -> StageResult:
    """Read ``corpus`` (file or BEIR folder) into ``index_dir/docstore`` through the stage runner, which
    holds the folder's write lock (``wait``: wait for another command using it instead of stopping)."""
    return run_stage(Path(index_dir), IngestStage(Path(corpus)), options or IngestOptions(), wait=wait)
