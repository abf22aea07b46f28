"""A run's pairs, indexed for the review page: what the list filters on, and each pair's full story.

The index holds a few fields per pair and the byte offsets of its lines in
``trajectories.jsonl`` and ``labels.jsonl``; the detail view reads those two
lines back. Indexing reads both files once: 50,000 pairs (340 MB of JSONL)
take about 7 s and 78 MB on two CPU cores (``bench/review_load.py``).

A trajectory is a pair to review when it has two different candidates: the
judge's chosen and rejected answers when the judge labelled it, else the last
revision that changed the answer over the first answer (what the dataset
builder pairs without a judge, and what a person can still accept or flip
when the judge dropped the row as a tie, low-margin or unparsed).

A run labelled by a panel of judges (``cai generate --judge-model a
--judge-model b``) records each judge's probability per comparison
(``by_judge``) and whether their votes split (``split``); labels written before
panels lack both fields and read as a single judge's (``{}``, ``False``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engine.judge.store import LABELS
from engine.records import Label, ReviewError, Trajectory
from engine.rundir import TRAJECTORIES, RunDirError, invalid_reason

R = TypeVar("R", bound=BaseModel)

SNIPPET = 160
"""Characters of the prompt shown in the list."""


@dataclass(slots=True)
class PairEntry:
    """What the list shows and filters on, for one pair."""

    id: str
    category: str
    principles: tuple[str, ...]
    status: str
    """The judge's status (labelled, tie, low-margin, unparsed, single) or ``unjudged``."""
    margin: float | None
    disagreed: bool
    split: bool
    """A panel's judges voted for different responses in some comparison of the row."""
    unparsed: int
    chosen_from: str
    rejected_from: str
    prompt: str
    trajectory_at: int
    label_at: int | None

    def row(self) -> dict[str, Any]:
        """The list row the page gets."""
        return {
            "id": self.id,
            "category": self.category,
            "principles": list(self.principles),
            "status": self.status,
            "margin": self.margin,
            "disagreed": self.disagreed,
            "split": self.split,
            "unparsed": self.unparsed,
            "snippet": self.prompt[:SNIPPET],
        }


FIXES = {
    TRAJECTORIES: "remove that line and run the same `cai generate --out {run}` again to make the row anew",
    LABELS: "remove that line and run `cai label {run}` to judge the row again",
}
"""What to do about an unreadable line, per file."""


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes) of each complete, non-blank line; a torn last line is skipped."""
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield number, start, line


def _object(line: bytes) -> dict[str, Any]:
    row = json.loads(line)
    if not isinstance(row, dict):
        raise ValueError(f"a JSON {type(row).__name__}, not an object")
    return row


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, KeyError):
        return f"no field {exc}"
    if isinstance(exc, ValidationError):
        return invalid_reason(exc)
    if isinstance(exc, (TypeError, AttributeError)):
        return f"a field has the wrong type: {exc}"
    return str(exc) or type(exc).__name__


def unreadable(run_dir: Path, name: str, number: int, exc: Exception) -> str:
    """The message for line ``number`` of ``run_dir/name`` that cannot be read: where, why, and what to do."""
    what = {TRAJECTORIES: "trajectory", LABELS: "label"}.get(name, "row")
    fix = FIXES.get(name, "fix or remove that line").format(run=run_dir)
    return f"{run_dir / name}:{number}: not a {what} this version of cai can read ({_why(exc)}); {fix}"


def _label_fields(row: dict[str, Any]) -> dict[str, Any]:
    comparisons = row["comparisons"]
    return {
        "status": row["status"],
        "chosen_from": row["chosen_from"],
        "rejected_from": row["rejected_from"],
        "margin": row["margin"],
        "principles": row["principles"],
        "disagreed": any(c["disagreed"] for c in comparisons),
        "split": any(bool(c.get("split", False)) for c in comparisons),  # missing: a label from before panels
        "panel": any(bool(c.get("by_judge")) for c in comparisons),
        "unparsed": sum(c["unparsed"] for c in comparisons),
    }


def _last_user_turn(prompt: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")


def _default_pair(row: dict[str, Any]) -> tuple[str, str] | None:
    """Last revision that changed the answer over the first answer; None when none did."""
    for number in range(len(row["rounds"]), 0, -1):
        if row["rounds"][number - 1]["changed"]:
            return f"revision_{number}", "initial"
    return None


class PairIndex:
    """The reviewable pairs of one run folder, in the order of ``trajectories.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        trajectories = run_dir / TRAJECTORIES
        if not trajectories.exists():
            raise RunDirError(f"{run_dir}: no {TRAJECTORIES}; make a run with `cai generate --out {run_dir}`")
        labels: dict[str, tuple[int, dict[str, Any]]] = {}
        self.judged = (run_dir / LABELS).exists()
        self.panel = False
        """Some label holds a panel's per-judge probabilities (the page then offers the ``split`` filter)."""
        if self.judged:  # only what the list needs: a full label with every judgment is ~10x larger
            for number, at, line in _lines(run_dir / LABELS):
                try:
                    row = _object(line)
                    fields = _label_fields(row)
                    labels[str(row["id"])] = (at, fields)
                    self.panel = self.panel or fields["panel"]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise RunDirError(unreadable(run_dir, LABELS, number, exc)) from None
        self.entries: list[PairEntry] = []
        self.rows = 0
        for number, at, line in _lines(trajectories):
            try:
                row = _object(line)
                entry = self._entry(at, row, labels.get(str(row["id"])))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise RunDirError(unreadable(run_dir, TRAJECTORIES, number, exc)) from None
            self.rows += 1
            if entry is not None:
                self.entries.append(entry)
        self.by_id = {entry.id: entry for entry in self.entries}
        self.facets = self._facets()

    @staticmethod
    def _entry(at: int, row: dict[str, Any], found: tuple[int, dict[str, Any]] | None) -> PairEntry | None:
        label_at, label = found if found is not None else (None, None)
        principles = [r["principle_id"] for r in row["rounds"]]
        if label is not None and label["chosen_from"] and label["rejected_from"]:
            pair: tuple[str, str] | None = (label["chosen_from"], label["rejected_from"])
        else:
            pair = _default_pair(row)
        if pair is None:
            return None
        if label is not None:
            principles += [p for p in label["principles"] if p not in principles]
        return PairEntry(
            id=row["id"],
            category=row.get("category") or "",
            principles=tuple(dict.fromkeys(principles)),
            status=label["status"] if label is not None else "unjudged",
            margin=label["margin"] if label is not None else None,
            disagreed=label is not None and label["disagreed"],
            split=label is not None and label["split"],
            unparsed=label["unparsed"] if label is not None else 0,
            chosen_from=pair[0],
            rejected_from=pair[1],
            prompt=_last_user_turn(row["prompt"]),
            trajectory_at=at,
            label_at=label_at,
        )

    def _facets(self) -> dict[str, dict[str, int]]:
        """Values of each filter with their counts: category, principle, status."""
        out: dict[str, dict[str, int]] = {"category": {}, "principle": {}, "status": {}}
        for entry in self.entries:
            out["category"][entry.category] = out["category"].get(entry.category, 0) + 1
            out["status"][entry.status] = out["status"].get(entry.status, 0) + 1
            for principle in entry.principles:
                out["principle"][principle] = out["principle"].get(principle, 0) + 1
        return {name: dict(sorted(values.items())) for name, values in out.items()}

    def _read(self, name: str, at: int, record: type[R]) -> R:
        """The record whose line starts at byte ``at`` of ``name``.

        Raises:
            ReviewError: 500 when the line is no such record (the file was
                edited, or rewritten since the index was made).
        """
        path = self.run_dir / name
        try:
            with path.open("rb") as handle:
                handle.seek(at)
                return record.model_validate_json(handle.readline())
        except OSError as exc:
            raise ReviewError(f"{path}: cannot read: {exc.strerror or exc}", status=500) from None
        except ValidationError as exc:
            with path.open("rb") as handle:
                number = handle.read(at).count(b"\n") + 1
            raise ReviewError(
                unreadable(self.run_dir, name, number, exc)
                + " (if the run was generated or judged again since `cai review` started, restart it)",
                status=500,
            ) from None

    def trajectory(self, entry: PairEntry) -> Trajectory:
        """The full trajectory of a pair.

        Raises:
            ReviewError: 500 when its line can no longer be read.
        """
        return self._read(TRAJECTORIES, entry.trajectory_at, Trajectory)

    def label(self, entry: PairEntry) -> Label | None:
        """The judge's label of a pair, if the run is judged.

        Raises:
            ReviewError: 500 when its line can no longer be read.
        """
        if entry.label_at is None:
            return None
        return self._read(LABELS, entry.label_at, Label)

    def texts(self, entry: PairEntry) -> tuple[str, str]:
        """The chosen and rejected texts of the pair as the judge (or the pipeline) ordered it."""
        texts = self.trajectory(entry).texts()
        return texts[entry.chosen_from], texts[entry.rejected_from]


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def word_diff(before: str, after: str) -> list[list[str]]:
    """``after`` against ``before`` as ``[op, text]`` runs: ``=`` kept, ``-`` removed, ``+`` added."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    out: list[list[str]] = []

    def add(op: str, tokens: list[str]) -> None:
        if not tokens:
            return
        text = "".join(tokens)
        if out and out[-1][0] == op:
            out[-1][1] += text
        else:
            out.append([op, text])

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            add("=", a[i1:i2])
        else:
            add("-", a[i1:i2])
            add("+", b[j1:j2])
    return out


def story(trajectory: Trajectory) -> list[dict[str, Any]]:
    """The answer's history for the detail view: first answer, then each critique and revision (diffed)."""
    steps: list[dict[str, Any]] = [{"kind": "answer", "name": "initial", "text": trajectory.initial}]
    previous = trajectory.initial
    for number, step in enumerate(trajectory.rounds, start=1):
        steps.append(
            {
                "kind": "critique",
                "name": f"critique_{number}",
                "principle": step.principle_id,
                "text": step.critique,
                "stopped": step.stopped,
            }
        )
        if step.revision is not None:
            steps.append(
                {
                    "kind": "revision",
                    "name": f"revision_{number}",
                    "text": step.revision,
                    "changed": step.changed,
                    "diff": word_diff(previous, step.revision),
                }
            )
            previous = step.revision
    return steps
