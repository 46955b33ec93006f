"""Splitting documents into passages at index time, so every passage fits the model that reads it.

Embedding models and rerankers read a bounded number of tokens; a long document cut at ``max_length``
loses everything after the cut. Splitting it into overlapping windows and scoring each window keeps the
whole text searchable (MaxP, FirstP, SumP aggregate the windows' scores back per document, see
``retrieval/aggregation``).

Two ways to cut, chosen by the index:

* **token windows** (:class:`TokenSplitter`, dense indexes): windows of the embedding model's own tokens.
  ``N`` counts *everything the model will read*: the title (repeated in every passage), the separator,
  the document template and the special tokens the embedder adds (EOS for the lychee recipe, [CLS]/[SEP]
  for BERT-style models), so a passage is never truncated. Consecutive windows share exactly ``N - S``
  tokens of text: the title and special tokens take their room out of the step, not out of the overlap,
  so any span of up to ``N - S + 1`` tokens lies whole in some passage whatever the title's length.
* **word windows** (:class:`WordSplitter`, BM25-only indexes): ``N`` whitespace words of text, stride
  ``S`` words, the title prepended but not counted (no model limit to respect).

Rules at the edges (decided here, tested in ``tests/test_passages.py``):

* a document that fits (``<= N`` tokens as the model reads it, or ``<= N`` words) is one passage equal
  to the document: same title, same text, offsets ``0..len(text)``;
* a document with empty text is one passage holding its title alone (the title may still match);
* a title so long that it would take more than half of the stride is cut to its first tokens (counted in
  the statistics), so a passage always advances by at least ``S / 2`` tokens of text;
* the passage text is the slice ``text[start:end]`` of the original text, trimmed of surrounding
  whitespace; windows are cut at token boundaries, which may fall inside a word.

Every candidate passage is re-tokenized the way the embedder will tokenize it; the rare window whose
re-tokenization comes out longer (a word cut in two can take more tokens than its pieces did) is shortened
until it fits, and the next window starts ``N - S`` tokens before the shortened end, so no token is lost.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from lyre.basics.declared import check_options, option
from lyre.basics.errors import LyreError, OptionError, opt
from lyre.basics.numbers import count, share
from lyre.formats.records import Document, document_text
from lyre.models.embedder import recipe_eos_id, resolve_embedder
from lyre.models.loading import load_tokenizer
from lyre.models.recipes import EmbedRecipe

PASSAGE_MARK = "#"
"""Passage ids are ``DOCID#N`` with ``N`` counted from 0; the parent is what precedes the last mark."""

DEFAULT_BATCH_DOCUMENTS = 256
DEFAULT_BATCH_CHARACTERS = 4_000_000
"""Tokenization batches end at whichever comes first, so one batch of huge documents stays bounded."""

_WORD = re.compile(r"\S+")


def passage_id(docid: str, number: int) -> str:
    return f"{docid}{PASSAGE_MARK}{number}"


def parse_passage_id(identifier: str) -> tuple[str, int]:
    """(parent docid, passage number) of ``DOCID#N``; document ids may themselves contain ``#``."""
    docid, mark, number = identifier.rpartition(PASSAGE_MARK)
    if not mark or not docid or not number.isdigit():
        raise LyreError(
            f"{identifier!r} is not a passage id DOCID{PASSAGE_MARK}N; "
            "aggregate only runs searched on a passage index"
        )
    return docid, int(number)


class Passage(NamedTuple):
    """One window of a document: ``text == parent.text[start:end]``, title repeated from the parent."""

    docid: str
    """The parent document's id."""
    number: int
    title: str
    text: str
    start: int
    end: int

    @property
    def passage_id(self) -> str:
        return passage_id(self.docid, self.number)

    def as_document(self) -> Document:
        """The passage as the stages that index documents see it (BM25, encode), under its passage id."""
        return Document(self.passage_id, self.title, self.text)


class DocumentSplit(NamedTuple):
    """What splitting one document gave: its passages, its length before splitting, whether its title
    had to be cut to fit."""

    passages: list[Passage]
    length: int
    title_cut: bool


@dataclass(frozen=True)
class PassageOptions:
    """Splitting documents into passages at index time (unset: whole documents, as before)."""

    passage_tokens: int | None = option(
        None,
        "Split documents into passages of at most this many tokens of the embedding model, title and "
        "special tokens included (whitespace words for a BM25-only index); unset: whole documents.",
        minimum=2,
    )
    passage_stride: int | None = option(
        None,
        "Tokens from one passage's start to the next one's: passages overlap by N - S "
        "(default: three quarters of --passage-tokens).",
        minimum=1,
    )

    def validate(self) -> None:
        """Ranges, and a stride only with a passage size and never above it."""
        check_options(self)
        if self.passage_stride is None:
            return
        if self.passage_tokens is None:
            raise OptionError(
                "passage_stride", self.passage_stride, f"needs {opt('passage_tokens')} to split documents"
            )
        if self.passage_stride > self.passage_tokens:
            raise OptionError(
                "passage_stride",
                self.passage_stride,
                f"must be at most {opt('passage_tokens')} ({self.passage_tokens}), or text is skipped",
            )

    def stride(self) -> int:
        """The stride in effect: the one given, or three quarters of the passage size."""
        if self.passage_tokens is None:
            raise LyreError(f"no passage size; pass {opt('passage_tokens')}")
        if self.passage_stride is not None:
            return self.passage_stride
        return max(self.passage_tokens * 3 // 4, 1)


class Splitter(Protocol):
    """What :func:`split_documents` needs of a splitter."""

    unit: str
    """What lengths count: "tokens" or "words"."""
    limit: int
    """The length above which a whole document would have been cut (model max length, or N words)."""

    def split_batch(self, documents: Sequence[Document]) -> list[DocumentSplit]: ...

    def settings(self) -> dict[str, Any]: ...


def _check_sizes(size: int, stride: int) -> None:
    PassageOptions(passage_tokens=size, passage_stride=stride).validate()


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``start..end`` shrunk past surrounding whitespace (an all-blank range collapses to its start)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class WordSplitter:
    """Windows of ``size`` whitespace words every ``stride`` words, for BM25-only indexes."""

    unit = "words"

    def __init__(self, size: int, stride: int) -> None:
        _check_sizes(size, stride)
        self.size = size
        self.stride = stride
        self.limit = size

    def settings(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "size": self.size,
            "stride": self.stride,
            "overlap": self.size - self.stride,
        }

    def split_batch(self, documents: Sequence[Document]) -> list[DocumentSplit]:
        return [self.split(document) for document in documents]

    def split(self, document: Document) -> DocumentSplit:
        words = [match.span() for match in _WORD.finditer(document.text)]
        if len(words) <= self.size:
            whole = Passage(document.docid, 0, document.title, document.text, 0, len(document.text))
            return DocumentSplit([whole], len(words), False)
        passages: list[Passage] = []
        start = 0
        while True:
            end = min(start + self.size, len(words))
            first, last = words[start][0], words[end - 1][1]
            passages.append(
                Passage(document.docid, len(passages), document.title, document.text[first:last], first, last)
            )
            if end == len(words):
                return DocumentSplit(passages, len(words), False)
            start += self.stride


Measure = Callable[[Passage], int]


class TokenSplitter:
    """Windows of the embedding model's tokens that fit the model exactly (see the module docstring).

    Built from the model's tokenizer and its recipe (document template, EOS rule, max length), without
    loading weights: :meth:`for_model` resolves both from a model name or folder.
    """

    unit = "tokens"

    def __init__(
        self, tokenizer: Any, recipe: EmbedRecipe, size: int, stride: int, *, tokenizer_name: str
    ) -> None:
        _check_sizes(size, stride)
        if not getattr(tokenizer, "is_fast", False):
            raise LyreError(
                f"the tokenizer of {tokenizer_name} has no fast (Rust) version, so it gives no character "
                "offsets to cut passages at; use a model with a tokenizer.json, or a BM25-only index"
            )
        if size > recipe.max_length:
            raise OptionError(
                "passage_tokens", size, f"is longer than the model reads ({recipe.max_length} tokens)"
            )
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.size = size
        self.stride = stride
        self.overlap = size - stride
        self.limit = recipe.max_length
        self.tokenizer_name = tokenizer_name
        self.eos_id = recipe_eos_id(self.tokenizer, self.recipe)
        self._body_start = recipe.document_template.find("{document}")
        self.title_allowance = stride // 2
        """Most tokens the title, template and special tokens may take from a passage."""
        self.fixed_tokens = self.lengths([recipe.format_document("")])[0]
        """Tokens every passage carries whatever its text: template and special tokens."""
        if self.fixed_tokens > self.title_allowance:
            raise OptionError(
                "passage_stride",
                stride,
                f"is too small: the model adds {self.fixed_tokens} tokens to every passage, which may take "
                "at most half of the stride",
            )

    @classmethod
    def for_model(
        cls, name_or_path: str | Path, size: int, stride: int, **recipe_overrides: Any
    ) -> TokenSplitter:
        """The splitter for an embedding model as ``lyre index`` resolves it (recipe overrides included)."""
        folder, recipe, _ = resolve_embedder(name_or_path, **recipe_overrides)
        tokenizer = load_tokenizer(folder, recipe.padding_side)
        return cls(tokenizer, recipe, size, stride, tokenizer_name=str(name_or_path))

    def fingerprint(self) -> str:
        """Identity of the tokenizer's vocabulary, merges and normalisation, wherever its files lie."""
        serialized = self.tokenizer.backend_tokenizer.to_str()
        return hashlib.sha256(serialized.encode("utf-8")).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        """The splitting as the manifest records it: what changes any passage boundary."""
        return {
            "unit": self.unit,
            "size": self.size,
            "stride": self.stride,
            "overlap": self.overlap,
            "tokenizer": self.tokenizer_name,
            "tokenizer_fingerprint": self.fingerprint(),
            "document_template": self.recipe.document_template,
            "eos_token_id": self.eos_id,
        }

    def _added_eos(self, ids: Sequence[int]) -> int:
        return int(self.eos_id is not None and (not ids or ids[-1] != self.eos_id))

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens the embedder feeds the model for each (already formatted) text, before truncation."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
        return [len(ids) + self._added_eos(ids) for ids in encoded]

    def _passage_length(self, passage: Passage) -> int:
        return self.lengths([self._model_text(passage.title, passage.text)])[0]

    def _model_text(self, title: str, text: str) -> str:
        return self.recipe.format_document(document_text(Document("", title, text)))

    def _analyse(self, documents: Sequence[Document]) -> list[tuple[list[tuple[int, int]], int]]:
        """Per document: the character spans (into its text) of the tokens of its text, as tokenized
        inside the whole model input, and the length of that whole input."""
        texts = [self._model_text(document.title, document.text) for document in documents]
        encoded = self.tokenizer(
            texts,
            add_special_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            verbose=False,
        )
        results = []
        for index, document in enumerate(documents):
            ids = encoded["input_ids"][index]
            begin = self._body_start + (len(document.title) + 1 if document.title and document.text else 0)
            finish = begin + len(document.text)
            spans = [
                (max(start, begin) - begin, min(end, finish) - begin)
                for (start, end), special in zip(
                    encoded["offset_mapping"][index], encoded["special_tokens_mask"][index], strict=True
                )
                if not special and end > begin and start < finish
            ]
            results.append((spans, len(ids) + self._added_eos(ids)))
        return results

    def _cut_title(self, title: str, allowed: int) -> str:
        """The longest prefix of ``title``, cut at a token boundary, that with the template and special
        tokens takes at most ``allowed`` tokens."""
        ends = [
            end
            for _, end in self.tokenizer(
                title, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )["offset_mapping"]
        ]
        keep = len(ends)
        while keep > 0 and self.lengths([self._model_text(title[: ends[keep - 1]], "")])[0] > allowed:
            keep -= 1
        return title[: ends[keep - 1]].rstrip() if keep else ""

    def _windows(
        self, document: Document, spans: list[tuple[int, int]], overhead: int, measure: Measure | None
    ) -> list[Passage]:
        """Windows of ``N - overhead`` text tokens, each starting ``N - S`` tokens before the previous
        one's end. With ``measure``, a window that re-tokenizes longer than N is shortened until it fits."""
        budget = self.size - overhead
        passages: list[Passage] = []
        start = 0
        while True:
            end = min(start + budget, len(spans))
            while True:
                first, last = _trimmed(document.text, spans[start][0], spans[end - 1][1])
                passage = Passage(
                    document.docid, len(passages), document.title, document.text[first:last], first, last
                )
                excess = measure(passage) - self.size if measure is not None else 0
                if excess <= 0 or end - start == 1:
                    break
                end = max(end - excess, start + 1)
            passages.append(passage)
            if end == len(spans):
                return passages
            start = max(end - self.overlap, start + 1)

    def _split_exact(self, document: Document, spans: list[tuple[int, int]], length: int) -> DocumentSplit:
        """One document the careful way (``spans`` and ``length`` from :meth:`_analyse`): the title cut if
        it takes too much, each window measured."""
        overhead = length - len(spans)
        allowed = self.title_allowance if spans else self.size
        title_cut = overhead > allowed
        cut = document
        if title_cut:
            cut = document._replace(title=self._cut_title(document.title, allowed))
            [(spans, trimmed_length)] = self._analyse([cut])
            overhead = trimmed_length - len(spans)
        if not spans:
            return DocumentSplit(
                [Passage(cut.docid, 0, cut.title, cut.text, 0, len(cut.text))], length, title_cut
            )
        return DocumentSplit(self._windows(cut, spans, overhead, self._passage_length), length, title_cut)

    def split_batch(self, documents: Sequence[Document]) -> list[DocumentSplit]:
        """Split a batch: one tokenization for all documents, one re-tokenization of all candidate
        passages to check them, and the exact path only for the documents that need it."""
        results: list[DocumentSplit | None] = [None] * len(documents)
        candidates: dict[int, list[Passage]] = {}
        lengths: dict[int, int] = {}
        analysed = self._analyse(documents)
        for index, (document, (spans, length)) in enumerate(zip(documents, analysed, strict=True)):
            overhead = length - len(spans)
            if length <= self.size:
                whole = Passage(document.docid, 0, document.title, document.text, 0, len(document.text))
                results[index] = DocumentSplit([whole], length, False)
            elif spans and overhead <= self.title_allowance:
                candidates[index] = self._windows(document, spans, overhead, None)
                lengths[index] = length
        flat = [passage for passages in candidates.values() for passage in passages]
        measured = iter(self.lengths([self._model_text(passage.title, passage.text) for passage in flat]))
        for index, passages in candidates.items():
            fits = [next(measured) <= self.size for _ in passages]
            if all(fits):
                results[index] = DocumentSplit(passages, lengths[index], False)
        return [
            result if result is not None else self._split_exact(document, *analysis)
            for document, result, analysis in zip(documents, results, analysed, strict=True)
        ]


@dataclass
class SplitStats:
    """Running statistics of a split, for the ingest/index stages to print and record: passages per
    document, and document lengths before splitting (how much truncation would have cost)."""

    unit: str
    limit: int
    documents: int = 0
    passages: int = 0
    most_passages: int = 0
    titles_cut: int = 0
    lengths: array = field(default_factory=lambda: array("q"))

    def add(self, split: DocumentSplit) -> None:
        self.documents += 1
        self.passages += len(split.passages)
        self.most_passages = max(self.most_passages, len(split.passages))
        self.titles_cut += split.title_cut
        self.lengths.append(split.length)

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON-ready): passages per document, and lengths in ``unit`` before splitting."""
        import numpy as np

        lengths = np.frombuffer(self.lengths, dtype=np.int64) if self.documents else np.zeros(1, np.int64)
        return {
            "documents": self.documents,
            "passages": self.passages,
            "passages_per_document_mean": self.passages / max(self.documents, 1),
            "passages_per_document_max": self.most_passages,
            "titles_cut": self.titles_cut,
            "length_unit": self.unit,
            "length_mean": float(lengths.mean()),
            "length_p50": float(np.percentile(lengths, 50)),
            "length_p95": float(np.percentile(lengths, 95)),
            "length_max": int(lengths.max()),
            "length_limit": self.limit,
            "longer_than_limit": float((lengths > self.limit).mean()) if self.documents else 0.0,
        }

    def describe(self) -> str:
        """One line for the user."""
        s = self.summary()
        per_document = (
            f"{s['passages_per_document_mean']:.2f} per document, at most {count(self.most_passages)}"
        )
        lengths = ", ".join(f"{name} {count(round(s[f'length_{name}']))}" for name in ("mean", "p50", "p95"))
        return (
            f"{count(self.documents, 'documents')} -> {count(self.passages, 'passages')} ({per_document}); "
            f"{self.unit} per document before splitting: {lengths}, max {count(s['length_max'])}, "
            f"{share(s['longer_than_limit'], 1)} longer than {count(self.limit)}"
            + (f"; {count(self.titles_cut, 'titles')} cut to fit" if self.titles_cut else "")
        )


def _batches(
    documents: Iterable[Document], batch_documents: int, batch_characters: int
) -> Iterator[list[Document]]:
    batch: list[Document] = []
    characters = 0
    for document in documents:
        batch.append(document)
        characters += len(document.title) + len(document.text)
        if len(batch) >= batch_documents or characters >= batch_characters:
            yield batch
            batch, characters = [], 0
    if batch:
        yield batch


def split_documents(
    documents: Iterable[Document],
    splitter: Splitter,
    stats: SplitStats | None = None,
    *,
    batch_documents: int = DEFAULT_BATCH_DOCUMENTS,
    batch_characters: int = DEFAULT_BATCH_CHARACTERS,
) -> Iterator[Passage]:
    """The passages of ``documents`` in order, tokenized in bounded batches (memory does not grow with
    the corpus); ``stats``, when given, is updated as documents are split."""
    for batch in _batches(documents, batch_documents, batch_characters):
        for split in splitter.split_batch(batch):
            if stats is not None:
                stats.add(split)
            yield from split.passages
