"""The "bm25" stage: the docstore (or a passage index's passages) -> ``INDEX/bm25``, through the runner.

The stage checks its options (stemmer, stopwords) before any work, says whether the recorded stage still
matches them (its scoring parameters, analyzer and folder format: a folder of an older format is rebuilt),
and builds with :func:`indexes.bm25_build.build_bm25`. Its record keeps what built it, so ``lyre index``
rebuilds BM25 exactly when a setting that decides its scores changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lyre.basics.errors import LyreError, OptionError
from lyre.basics.progress import say
from lyre.indexes.analyzer import stemmer_languages, stopword_list
from lyre.indexes.bm25_build import BATCH_SIZE, DELTA, Bm25Options, build_bm25
from lyre.indexes.bm25_format import FORMAT
from lyre.indexes.docstore import DocStore
from lyre.indexes.manifest import BM25, DOCSTORE
from lyre.indexes.metadata import StageRecord
from lyre.indexes.source_store import store_params
from lyre.indexes.stages import Invalidate, StageResult, Upstream, required_upstream, run_stage, stage_files


@dataclass
class Bm25Stage:
    """Docstore -> BM25."""

    batch_size: int = BATCH_SIZE
    store: str = DOCSTORE
    """The store indexed: the docstore, or the passages of a passage index (``indexes/passage_stage.py``)."""
    name: ClassVar[str] = BM25

    def validate(self, index_dir: Path, options: Bm25Options, upstream: Upstream) -> None:
        if options.stemmer not in (None, "none") and options.stemmer not in stemmer_languages():
            raise OptionError(
                "stemmer",
                options.stemmer,
                "is not known; use none or a PyStemmer language: " + ", ".join(stemmer_languages()),
            )
        if options.stopwords is not None and "," not in options.stopwords:
            try:
                stopword_list(options.stopwords)
            except LyreError:
                raise OptionError(
                    "stopwords",
                    options.stopwords,
                    "is not known; use lucene, none, a bm25s list such as bm25s-en, or comma-separated words",
                ) from None
        required_upstream(index_dir, upstream, self.store)

    def is_current(self, index_dir: Path, record: StageRecord, options: Bm25Options) -> bool:
        wanted = {**_params(options), **store_params(self.store)}
        return wanted == {**record.params, "analyzer": _analyzer_of(record.params["analyzer"])}

    def build(self, index_dir: Path, options: Bm25Options, invalidate: Invalidate) -> StageResult:
        invalidate()
        built = build_bm25(
            DocStore.open(index_dir / self.store),
            index_dir / BM25,
            analyzer=options.build_analyzer(),
            k1=options.k1,
            b=options.b,
            method=options.bm25_method,
            batch_size=self.batch_size,
        )
        counts = {key: getattr(built, key) for key in ("documents", "vocabulary", "postings", "avg_doc_len")}
        rows = "documents" if self.store == DOCSTORE else self.store
        described = f"{counts['documents']:,} {rows}, {counts['vocabulary']:,} terms"
        say(f"{BM25}: {described}, {counts['postings']:,} postings")
        params = {key: getattr(built, key) for key in ("k1", "b", "method", "delta", "analyzer", "format")}
        params.update(store_params(self.store))
        files = stage_files(index_dir, BM25)
        record = StageRecord(described, params, counts, built.provenance, files)
        return StageResult(f"{BM25}: {described}", record)


def _analyzer_of(saved: dict[str, Any]) -> dict[str, Any]:
    """An analyzer's settings without the library versions it was saved with (they do not decide terms
    by themselves; a version change is warned about when the index is loaded)."""
    return {key: value for key, value in saved.items() if key != "versions"}


def _params(options: Bm25Options) -> dict[str, Any]:
    """The record params that ``options`` would build (the folder in the current format)."""
    analyzer = _analyzer_of(options.build_analyzer().to_dict())
    return {
        "k1": options.k1,
        "b": options.b,
        "method": options.bm25_method,
        "delta": DELTA,
        "analyzer": analyzer,
        "format": FORMAT,
    }


def bm25_stage(
    index_dir: str | Path, options: Bm25Options | None = None, *, wait: bool = False
) -> StageResult:
    """The "bm25" stage alone, through the stage runner: INDEX/docstore -> INDEX/bm25."""
    return run_stage(Path(index_dir), Bm25Stage(), options or Bm25Options(), wait=wait)
