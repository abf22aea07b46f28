"""Reading the judge's answer: the option strings it is scored on, the verdict it wrote, P(A)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from engine.records.labels import Verdict

OPTIONS = ("(A)", "(B)")
"""Option strings scored in the direct mode: what the prompt asks the judge to write first."""

COT_LEAD = "\nAnswer: ("
"""Text put after the judge's reasoning in chain-of-thought scoring; the options continue it."""

COT_OPTIONS = ("A)", "B)")
"""What follows :data:`COT_LEAD` for each option."""

_ANSWER = re.compile(r"(?i:\banswer\b)[\s:*_=-]{0,6}(?:(?i:is)\s*:?\s*)?(?:\(([AB])\)|\b([AB])\b(?=\s*(?:[.*)\]]|$)))")
_STATED = re.compile(
    r"(?:\(([AB])\)|\b(?:[Rr]esponse|[Oo]ption)\s+\(?([AB])\)?)\s+is\s+(?:clearly\s+|much\s+)?(?:the\s+)?"
    r"(?:better|safer|preferable|more\s+\w+)"
)


def read_verdict(text: str) -> tuple[Verdict | None, int]:
    """The verdict a judge wrote, and where its reasoning ends.

    The last ``Answer: (A)``-style line wins; the reasoning ends where it
    starts. Without one, a sentence like "(B) is better" counts when every such
    sentence names the same option; the reasoning is then the whole text.

    Returns:
        (``"A"``, ``"B"`` or None when no verdict can be read, end of the reasoning).
    """
    answers = list(_ANSWER.finditer(text))
    if answers:
        last = answers[-1]
        return _letter(last.group(1) or last.group(2)), last.start()
    stated = {_letter(m.group(1) or m.group(2)) for m in _STATED.finditer(text)}
    return (stated.pop() if len(stated) == 1 else None), len(text)


def _letter(value: str) -> Verdict:
    return "A" if value.upper() == "A" else "B"


def option_probability(logprobs: Sequence[float]) -> float | None:
    """P(A) normalised over the two options, or None when the scores are unusable (NaN, both -inf)."""
    a, b = logprobs
    if math.isnan(a) or math.isnan(b) or (a == b == -math.inf) or math.inf in (a, b):
        return None
    if a == b:
        return 0.5
    return 1.0 / (1.0 + math.exp(min(b - a, 700.0)))
