"""Prompt templates for yes/no LLM rerankers, as plain records with three placeholders.

Templates are built by hand rather than with the tokenizer's chat template: Qwen2.5's chat template
injects its own default system prompt when none is given, which silently changes the prompt. Formatting
splits the template once at its placeholders instead of using ``str.format``, so a document that contains
``{query}`` or literal braces in a custom template are passed through verbatim.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lyre.basics.errors import LyreError
from lyre.models.recipes import WEB_SEARCH_TASK

DEFAULT_RERANKER = "vec-ai/lychee-rerank"
DEFAULT_INSTRUCTION = WEB_SEARCH_TASK

LYCHEE_PREFIX = (
    "Given the instruction and query, judge whether the document is relevant to the query (yes/no)."
)

QWEN3_RERANKER_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)

_PLACEHOLDER = re.compile(r"\{(instruction|query|doc)\}")
_REQUIRED = ("query", "doc")


@dataclass(frozen=True)
class RerankTemplate:
    """A named prompt with ``{instruction}``, ``{query}`` and ``{doc}`` placeholders (``{instruction}``
    is optional: a template without it ignores the instruction)."""

    name: str
    text: str

    def format(self, *, instruction: str, query: str, doc: str) -> str:
        values = {"instruction": instruction, "query": query, "doc": doc}
        pieces = _PLACEHOLDER.split(self.text)
        # re.split with one group alternates literal text and placeholder names.
        return "".join(piece if i % 2 == 0 else values[piece] for i, piece in enumerate(pieces))

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


LYCHEE = RerankTemplate(
    name="lychee",
    text=(
        f"<|im_start|>system\n{LYCHEE_PREFIX}<|im_end|>\n"
        "<|im_start|>user\nInstruct: {instruction}\nQuery: {query}\nDocument: {doc}<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
)
"""The lychee paper's wording (prefix, then Instruct/Query/Document) wrapped in ChatML."""

QWEN3_RERANKER = RerankTemplate(
    name="qwen3-reranker",
    text=(
        f"<|im_start|>system\n{QWEN3_RERANKER_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\n<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    ),
)
"""The Qwen3-Reranker prompt, with its empty ``<think>`` block before the answer slot."""

TEMPLATES: dict[str, RerankTemplate] = {template.name: template for template in (LYCHEE, QWEN3_RERANKER)}


def custom_template(text: str, name: str = "custom") -> RerankTemplate:
    """A template from a user's string; it must contain ``{query}`` and ``{doc}``."""
    found = set(_PLACEHOLDER.findall(text))
    missing = [placeholder for placeholder in _REQUIRED if placeholder not in found]
    if missing:
        raise LyreError(
            f"rerank template lacks the placeholder {{{missing[0]}}}; a template needs {{query}} and {{doc}} "
            "(and usually {instruction})"
        )
    return RerankTemplate(name=name, text=text)


def get_template(name_or_text: str) -> RerankTemplate:
    """A named template (``lychee``, ``qwen3-reranker``) or, for text with placeholders, a custom one."""
    if name_or_text in TEMPLATES:
        return TEMPLATES[name_or_text]
    if "{" in name_or_text:
        return custom_template(name_or_text)
    raise LyreError(
        f"unknown rerank template {name_or_text!r}; use one of {', '.join(TEMPLATES)} "
        "or a template string with {instruction}, {query} and {doc}"
    )
