"""Splitting a response into sentences, as spans that cover the whole text.

A small splitter of its own (``engine/evaluate/refusal.py`` has a private one
for refusal phrases; that package is not shared with this one): a sentence
ends at ``.``, ``!`` or ``?`` (with any closing quotes or brackets) followed by
whitespace, or at a line break. Each span keeps the whitespace after it, so the
spans laid end to end give the text back exactly, and removing one span leaves
the rest of the text as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*")


@dataclass(frozen=True)
class Span:
    """One sentence of a text: ``text[start:end]``, its trailing whitespace included."""

    start: int
    end: int


def split_sentences(text: str) -> list[Span]:
    """The sentences of ``text`` as contiguous spans from 0 to ``len(text)``.

    Leading whitespace belongs to the first span; a text of whitespace only has
    no sentence (an empty list).
    """
    if not text.strip():
        return []
    spans: list[Span] = []
    start = 0
    for match in _END.finditer(text):
        end = match.end()
        if text[start:end].strip():
            spans.append(Span(start, end))
            start = end
    if start < len(text):
        if text[start:].strip() or not spans:
            spans.append(Span(start, len(text)))
        else:  # trailing whitespace only: it stays with the last sentence
            spans[-1] = Span(spans[-1].start, len(text))
    return spans


def without(text: str, spans: list[Span], removed: set[int]) -> str:
    """``text`` with the spans numbered in ``removed`` cut out (the others kept as they were)."""
    return "".join(text[s.start : s.end] for i, s in enumerate(spans) if i not in removed).strip()
