"""A run's dataset with people's review decisions in it, before anything reads it.

``cai review`` appends decisions to ``DIR/reviews.jsonl`` as a person clicks;
the dataset in ``DIR/dataset`` holds them only once it is rebuilt. The review
server rebuilds it when it stops, but a server can also die without that
(``kill -9``, a crash, a power cut), and a rebuild can fail. So whatever reads
a run's dataset (``cai export``, ``cai train``) first calls
:func:`apply_new_decisions`: when ``reviews.jsonl`` was written after the
dataset was built, the dataset is rebuilt with the decisions, so dropped pairs
never reach training and flipped pairs never arrive the wrong way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.dataset import DATASET_DIR
from engine.records import REVIEWS, ReviewError
from engine.rundir import RunDirError


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild with the review decisions made."""

    run_dir: Path
    dataset: Path
    pairs: int
    accepted: int
    flipped: int
    dropped: int
    stale: int
    """Decisions about texts the run no longer holds (ignored)."""

    def summary(self) -> str:
        """One line for the terminal."""
        decisions = self.accepted + self.flipped + self.dropped
        return (
            f"dataset rebuilt with {decisions} review decisions ({self.accepted} accepted, {self.flipped} flipped, "
            f"{self.dropped} dropped): {self.pairs} pairs in {self.dataset}"
            + (f"; {self.stale} stale decisions ignored" if self.stale else "")
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def decisions_pending(run_dir: Path) -> bool:
    """True when ``run_dir`` has a dataset and ``reviews.jsonl`` was written since it was built.

    Equal times count as pending: file times are only as fine as the kernel's
    clock tick, so a decision written in the same tick as the dataset may be
    missing from it (one rebuild too many costs seconds; a decision lost costs
    a wrong model).
    """
    try:
        reviewed = (run_dir / REVIEWS).stat().st_mtime_ns
        built = (run_dir / DATASET_DIR).stat().st_mtime_ns
    except FileNotFoundError:
        return False
    return (run_dir / DATASET_DIR).is_dir() and reviewed >= built


def rebuild(run_dir: Path) -> Rebuilt:
    """Rebuild the dataset and card of ``run_dir`` with its review decisions, now.

    Raises:
        RunDirError: No run in the folder, another process is writing it, a
            line of one of its files is unreadable, or the folder cannot be
            written; the message says what to do.
    """
    from engine.dataset.of_run import rebuild_dataset

    reviews = run_dir / REVIEWS
    before = _size(reviews)
    try:
        path, sizes, stats = rebuild_dataset(run_dir)
    except ReviewError as exc:
        raise RunDirError(str(exc)) from None
    except OSError as exc:
        raise RunDirError(
            f"{run_dir}: cannot rebuild the dataset with the review decisions: {exc.strerror or exc}"
        ) from None
    if _size(reviews) != before:
        # A decision arrived while the dataset was being built: it may be missing from it. Make the file
        # newer than the dataset, so the next reader rebuilds again.
        os.utime(reviews)
    human = stats.human
    return Rebuilt(
        run_dir=run_dir,
        dataset=path,
        pairs=sizes["preferences"],
        accepted=human["accept"],
        flipped=human["flip"],
        dropped=human["drop"],
        stale=stats.stale_decisions,
    )


def apply_new_decisions(run_dir: Path) -> Rebuilt | None:
    """Rebuild ``run_dir``'s dataset when review decisions are newer than it (None: it was up to date).

    Call this before reading a run's dataset. A folder without a dataset, or
    without decisions, is left as it is.

    Raises:
        RunDirError: The rebuild failed (see :func:`rebuild`).
    """
    return rebuild(run_dir) if decisions_pending(run_dir) else None


__all__ = ["Rebuilt", "apply_new_decisions", "decisions_pending", "rebuild"]
