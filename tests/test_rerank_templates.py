import pytest
from lyre.basics.errors import LyreError
from lyre.models.rerank_templates import (
    DEFAULT_INSTRUCTION,
    LYCHEE,
    QWEN3_RERANKER,
    TEMPLATES,
    custom_template,
    get_template,
)


def test_lychee_template_is_the_paper_wording_in_chatml():
    text = LYCHEE.format(instruction="I", query="Q", doc="D")
    assert text == (
        "<|im_start|>system\nGiven the instruction and query, judge whether the document is relevant to the "
        "query (yes/no).<|im_end|>\n<|im_start|>user\nInstruct: I\nQuery: Q\nDocument: D<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_default_instruction():
    assert DEFAULT_INSTRUCTION == "Given a web search query, retrieve relevant passages that answer the query"


def test_qwen3_reranker_template_ends_with_empty_think_block():
    text = QWEN3_RERANKER.format(instruction="I", query="Q", doc="D")
    assert "<Instruct>: I\n<Query>: Q\n<Document>: D<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert set(TEMPLATES) == {"lychee", "qwen3-reranker"}


def test_placeholders_inside_values_are_not_substituted():
    text = LYCHEE.format(instruction="{doc}", query="{instruction} {x}", doc="{query}")
    assert "Instruct: {doc}\nQuery: {instruction} {x}\nDocument: {query}<|im_end|>" in text


def test_custom_template_keeps_literal_braces():
    template = get_template('{"q": "{query}", "d": "{doc}"}')
    assert template.name == "custom"
    assert template.format(instruction="I", query="Q", doc="D") == '{"q": "Q", "d": "D"}'


def test_custom_template_without_instruction_ignores_it():
    assert custom_template("{query} | {doc}").format(instruction="I", query="Q", doc="D") == "Q | D"


@pytest.mark.parametrize(
    ("text", "missing"), [("Query: {query}", "{doc}"), ("{document} {query}", "{doc}"), ("{doc}", "{query}")]
)
def test_custom_template_missing_placeholder_is_one_line_error(text, missing):
    with pytest.raises(LyreError) as error:
        custom_template(text)
    assert missing in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_template_name():
    with pytest.raises(LyreError, match="lychee, qwen3-reranker"):
        get_template("monot5")
    assert get_template("lychee") is LYCHEE
