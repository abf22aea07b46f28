"""Recording what people decide about a run's pairs: the append-only ``reviews.jsonl`` writer.

Every click on the review page appends one :class:`~engine.records.Decision`
line holding the pair's whole state after the click (the action and the note),
so the latest line of a pair is its state and the file is the history. A line is
written with one ``write`` on a file opened for appending, under an
exclusive lock (a thread lock inside the server, ``flock`` between
processes) and fsynced: two browser tabs, or two ``cai review`` servers on
the same run, never interleave or tear lines. Each line carries the pair's
``revision`` (how many decisions it has had); a click made on a stale view
(another tab decided since) is refused, not silently applied over the other.

The records themselves, and reading them, live in :mod:`engine.records.decisions`.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from engine.records.decisions import REVIEWS, Action, Decision, ReviewError, read_decisions, texts_hash

try:  # POSIX: lock the file between processes too
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock alone
    fcntl = None  # type: ignore[assignment]


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
            for decision in read_decisions(self.path):
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


def as_json(decision: Decision | None) -> dict[str, object] | None:
    """A decision as the page gets it."""
    return None if decision is None else json.loads(decision.model_dump_json())
