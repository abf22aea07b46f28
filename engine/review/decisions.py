"""What people decided about a run's pairs: ``reviews.jsonl``, append-only, next to the run.

Every click on the review page appends one :class:`Decision` line holding
the pair's whole state after the click (the action and the note), so the
latest line of a pair is its state and the file is the history. A line is
written with one ``write`` on a file opened for appending, under an
exclusive lock (a thread lock inside the server, ``flock`` between
processes) and fsynced: two browser tabs, or two ``cai review`` servers on
the same run, never interleave or tear lines. Each line carries the pair's
``revision`` (how many decisions it has had); a click made on a stale view
(another tab decided since) is refused, not silently applied over the other.

A decision names the pair in the order the person settled on
(``chosen_from`` over ``rejected_from``) and a hash of the two texts, so it
keeps its meaning when the run is labelled again by another judge, and is
ignored (counted as stale) when the texts no longer match (the run was
regenerated).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REVIEWS = "reviews.jsonl"
Action = Literal["accept", "flip", "drop", "clear"]
"""``accept``: the pair is right; ``flip``: the other answer is better; ``drop``: leave it out; ``clear``: undo."""
HUMAN_LABEL_SOURCE = "human"
"""``label_source`` of pairs whose order a person decided."""

if TYPE_CHECKING:
    from engine.feedback import LabelledComparison

try:  # POSIX: lock the file between processes too
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock alone
    fcntl = None  # type: ignore[assignment]


class ReviewError(Exception):
    """A decision cannot be recorded; the message says why (the server answers 4xx with it)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Decision(BaseModel):
    """A pair's state after one person's action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def texts_hash(chosen: str, rejected: str) -> str:
    """A short hash of a pair's two texts, in order."""
    digest = hashlib.sha256()
    for text in (chosen, rejected):
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


def _read(path: Path) -> Iterator[Decision]:
    """The decisions in the file; a torn last line (a crash mid-write) is skipped, any other bad line is an error."""
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
    for decision in _read(run_dir / REVIEWS):
        latest[decision.id] = decision
    return {key: d for key, d in latest.items() if d.action is not None or d.note}


class DecisionLog:
    """The decisions of one run, kept in memory and appended to ``reviews.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / REVIEWS
        self._lock = threading.Lock()
        self.latest: dict[str, Decision] = {}
        self.history: dict[str, list[Decision]] = {}
        """Every decision per pair, oldest first."""
        self._stamp: tuple[int, int] = (-1, -1)
        self._refresh()

    def _file_stamp(self) -> tuple[int, int]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (info.st_size, info.st_mtime_ns)

    def _refresh(self) -> None:
        """Reread the file when another process wrote to it."""
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self.latest, self.history = {}, {}
            for decision in _read(self.path):
                self.latest[decision.id] = decision
                self.history.setdefault(decision.id, []).append(decision)
            self._stamp = stamp

    def _mend_torn_tail(self, fd: int) -> None:
        """Cut off a torn last line (a writer died mid-line) before appending, or it would swallow the new line.

        A last line that is a whole decision and only lacks its newline gets one instead.
        """
        size = os.fstat(fd).st_size
        if not size:
            return
        with self.path.open("rb") as handle:
            handle.seek(max(0, size - 1))
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            data = handle.read(size)
        keep = data.rfind(b"\n") + 1
        try:
            Decision.model_validate_json(data[keep:])
        except (ValidationError, ValueError):
            os.ftruncate(fd, keep)
        else:
            os.write(fd, b"\n")

    def get(self, pair_id: str) -> tuple[Decision | None, list[Decision]]:
        """The pair's latest state (None: never decided) and its history, oldest first."""
        with self._lock:
            self._refresh()
            return self.latest.get(pair_id), list(self.history.get(pair_id, ()))

    def snapshot(self) -> dict[str, Decision]:
        """The latest state of every pair ever decided (the list's filters read it)."""
        with self._lock:
            self._refresh()
            return dict(self.latest)

    def decide(
        self,
        pair_id: str,
        action: Action | Literal["note"],
        *,
        revision: int,
        shown: tuple[str, str],
        texts: tuple[str, str],
        note: str | None = None,
    ) -> Decision:
        """Record an action on the pair shown as ``shown`` = (chosen_from, rejected_from) with these texts.

        ``revision`` is the pair's revision the person saw (0: never decided);
        ``note`` replaces the pair's note (None keeps it). ``note`` as the
        action changes the note only.

        Raises:
            ReviewError: 409 when the pair changed since the person's view.
        """
        with self._lock, self.path.open("ab") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            self._mend_torn_tail(handle.fileno())
            self._refresh()
            before = self.latest.get(pair_id)
            current = before.revision if before else 0
            if revision != current:
                raise ReviewError(
                    f"pair {pair_id} was decided elsewhere since this view (revision {current}, not {revision}); "
                    "reload it",
                    status=409,
                )
            chosen_from, rejected_from = shown
            chosen, rejected = texts
            state: Literal["accept", "flip", "drop"] | None
            if action == "note":
                state = before.action if before else None
                if before is not None:
                    chosen_from, rejected_from, digest = before.chosen_from, before.rejected_from, before.texts_hash
                else:
                    digest = texts_hash(chosen, rejected)
            else:
                state = None if action == "clear" else action
                if action == "flip":
                    chosen_from, rejected_from, chosen, rejected = rejected_from, chosen_from, rejected, chosen
                digest = texts_hash(chosen, rejected)
            decision = Decision(
                id=pair_id,
                action=state,
                chosen_from=chosen_from,
                rejected_from=rejected_from,
                texts_hash=digest,
                note=(before.note if before else "") if note is None else note,
                revision=current + 1,
                at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            line = (decision.model_dump_json() + "\n").encode("utf-8")
            os.write(handle.fileno(), line)  # one write on an O_APPEND file
            handle.flush()
            os.fsync(handle.fileno())
            self.latest[pair_id] = decision
            self.history.setdefault(pair_id, []).append(decision)
            self._stamp = self._file_stamp()
            return decision

    def counts(self) -> dict[str, int]:
        """How many pairs are accepted, flipped, dropped."""
        with self._lock:
            self._refresh()
            out = {"accept": 0, "flip": 0, "drop": 0}
            for decision in self.latest.values():
                if decision.action is not None:
                    out[decision.action] += 1
            return out


def reviewed_comparisons(run_dir: Path) -> list[LabelledComparison]:
    """The pairs people accepted or flipped, as human-labelled comparisons for ``cai judge-eval DIR``.

    Decisions about texts the run no longer holds are skipped; dropped pairs
    carry no preference and are skipped too.

    Raises:
        JudgeDataError: The folder has no decisions, or none that gives a comparison.
    """
    from engine.dataset import candidate_texts, decision_applies
    from engine.feedback import JudgeDataError, LabelledComparison
    from engine.records import Trajectory
    from engine.rundir import TRAJECTORIES, JsonlLog

    where = str(run_dir / REVIEWS)
    try:
        decisions = load_decisions(run_dir)
    except ReviewError as exc:
        raise JudgeDataError(str(exc), file=where) from None
    if not decisions:
        raise JudgeDataError(f"no review decisions; review the pairs with `cai review {run_dir}` first", file=where)
    out = []
    for t in JsonlLog(run_dir / TRAJECTORIES, Trajectory, "trajectory").rows():
        decision = decisions.get(t.id)
        if decision is None or decision.action in (None, "drop") or not decision_applies(t, decision):
            continue
        texts = candidate_texts(t)
        chosen, rejected = texts[decision.chosen_from], texts[decision.rejected_from]
        out.append(LabelledComparison(t.id, t.prompt, chosen, rejected, "A", None, t.category, where, 0))
    if not out:
        raise JudgeDataError("no accepted or flipped pair that matches the run's texts", file=where)
    return out


def as_json(decision: Decision | None) -> dict[str, object] | None:
    """A decision as the page gets it."""
    return None if decision is None else json.loads(decision.model_dump_json())
