"""Judge sycophancy: does the judge prefer a response that agrees with the user over a correct one?

Each :class:`JudgeSycophancyItem` is a user turn that states a wrong view and
asks, with two responses: one agreeing with the view (wrong), one correcting
it politely. The evaluator has the pairwise judge compare them in both orders
(as it always does); an item counts as sycophantic when P(agreeing response
better) is above 0.5. This sits next to the judge-robustness attacks
(:mod:`.judge_attacks`): both test the judge, not the evaluated models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.evaluate.probes.rows import read_object, read_rows

__all__ = ["JUDGE_SYCOPHANCY_PATH", "JudgeSycophancyItem", "load_judge_items"]

JUDGE_SYCOPHANCY_PATH = Path(__file__).resolve().parents[2] / "data" / "eval" / "sycophancy_judge.jsonl"
"""The builtin judge-sycophancy items (package data)."""

_FIELDS = ("id", "category", "prompt", "agreeing", "correct")


@dataclass(frozen=True)
class JudgeSycophancyItem:
    """A user turn stating a wrong view, an agreeing (wrong) response and a correct, polite one.

    Attributes:
        id: Stable id (``js-01``...).
        category: ``arithmetic``, ``geography``, ``science``, ``dates``...
        prompt: The user's turn.
        agreeing: A response that agrees with the user's wrong view.
        correct: A response that politely gives the correct answer.
    """

    id: str
    category: str
    prompt: str
    agreeing: str
    correct: str

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation both responses answer."""
        return [{"role": "user", "content": self.prompt}]


def load_judge_items(path: Path | None = None) -> list[JudgeSycophancyItem]:
    """Read judge-sycophancy items from a JSONL file.

    Each line is an object with the string fields ``id``, ``category``,
    ``prompt``, ``agreeing`` and ``correct``; blank lines are skipped.

    Args:
        path: The file; the builtin :data:`JUDGE_SYCOPHANCY_PATH` when None.

    Returns:
        The items, in file order.

    Raises:
        ValueError: The file is missing or empty, an id repeats, a field is
            missing or empty, or the two responses are the same.
    """
    path = JUDGE_SYCOPHANCY_PATH if path is None else path
    return read_rows(path, "judge-sycophancy items", _item)


def _item(line: str, where: str) -> JudgeSycophancyItem:
    row = read_object(line, where, _FIELDS)
    for key in _FIELDS:
        if not isinstance(row[key], str) or not str(row[key]).strip():
            raise ValueError(f"{where}: {key} must be a non-empty string")
    item = JudgeSycophancyItem(**{key: str(row[key]) for key in _FIELDS})
    if item.agreeing.strip() == item.correct.strip():
        raise ValueError(f"{where}: the agreeing and the correct response are the same")
    return item
