"""What people decided about a run's pairs (``reviews.jsonl``), as data every reader of a run can use.

``cai review`` appends one :class:`Decision` line per click, holding the
pair's whole state after it (see :mod:`engine.review.decisions` for how lines
are written); the latest line of a pair is its state. A decision names the
pair in the order the person settled on (``chosen_from`` over
``rejected_from``) and a hash of the two texts, so it keeps its meaning when
the run is labelled again by another judge and is ignored (counted as stale)
when the texts no longer match (the run was regenerated).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from engine.errors import UserError
from engine.records.base import Record
from engine.records.trajectory import Trajectory

REVIEWS = "reviews.jsonl"
Action = Literal["accept", "flip", "drop", "clear"]
"""``accept``: the pair is right; ``flip``: the other answer is better; ``drop``: leave it out; ``clear``: undo."""


class ReviewError(UserError):
    """A decision cannot be read or recorded; the message says why (the review server answers ``status`` with it)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Decision(Record):
    """A pair's state after one person's action."""

    id: str = Field(description="The trajectory's (prompt's) id.")
    action: Literal["accept", "flip", "drop"] | None = Field(description="The decision in force; None: unreviewed.")
    chosen_from: str = Field(description="The candidate the person holds better (initial, revision_N).")
    rejected_from: str
    texts_hash: str = Field(description="Hash of the chosen and rejected texts the person read.")
    note: str = ""
    revision: int = Field(ge=1, description="How many decisions this pair has had, this one included.")
    at: str = Field(description="When (UTC, ISO 8601).")

    @property
    def human_label(self) -> str:
        """``accepted`` / ``flipped`` / ``dropped``, or empty when the pair is unreviewed."""
        return {"accept": "accepted", "flip": "flipped", "drop": "dropped"}.get(self.action or "", "")

    def pair_texts(self, trajectory: Trajectory) -> tuple[str, str] | None:
        """(chosen, rejected) texts in the person's order, or None when the decision is not about this
        trajectory's texts (the run was regenerated since: the decision is stale)."""
        texts = trajectory.texts()
        chosen, rejected = texts.get(self.chosen_from), texts.get(self.rejected_from)
        if chosen is None or rejected is None or texts_hash(chosen, rejected) != self.texts_hash:
            return None
        return chosen, rejected

    def applies(self, trajectory: Trajectory) -> bool:
        """Whether the decision is about this trajectory's texts (not those of a run since regenerated)."""
        return self.pair_texts(trajectory) is not None


def texts_hash(chosen: str, rejected: str) -> str:
    """A short hash of a pair's two texts, in order."""
    digest = hashlib.sha256()
    for text in (chosen, rejected):
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


def read_decisions(path: Path) -> Iterator[Decision]:
    """Every decision in ``reviews.jsonl``, oldest first.

    A torn last line (a crash mid-write) is skipped.

    Raises:
        ReviewError: Any other line is not a decision (the message names it).
    """
    if not path.exists():
        return
    with path.open("rb") as handle:
        lines = handle.read().split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield Decision.model_validate_json(line)
        except (ValidationError, ValueError):
            if number == len(lines):  # no newline after it: torn by a crash
                return
            raise ReviewError(f"{path}:{number}: not a review decision; fix or remove that line") from None


def load_decisions(run_dir: Path) -> dict[str, Decision]:
    """The state in force for each pair a person touched: a decision, or only a note (cleared ones are left out)."""
    latest: dict[str, Decision] = {}
    for decision in read_decisions(run_dir / REVIEWS):
        latest[decision.id] = decision
    return {key: d for key, d in latest.items() if d.action is not None or d.note}
