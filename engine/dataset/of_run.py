"""A run folder's dataset and card, (re)built from its trajectories, labels and review decisions."""

from __future__ import annotations

from pathlib import Path

from engine.dataset.build import RunStats, save_dataset
from engine.dataset.card import write_card
from engine.judge.stats import LabelStats, LabelTally
from engine.judge.store import LabelStore
from engine.records.decisions import load_decisions
from engine.rundir import RunDir, run_lock


def build_dataset(run: RunDir, labels: LabelStore | None) -> tuple[Path, dict[str, int], RunStats, LabelStats | None]:
    """(Re)build the dataset and card of a run folder from its trajectories and labels."""
    judged = None
    label_stats = None
    decisions = load_decisions(run.path)
    if labels is None:
        rows = ((t, None) for t in run.rows())
        path, sizes, stats = save_dataset(rows, run.path, judged=False, decisions=decisions)
    else:
        tally = LabelTally()
        path, sizes, stats = save_dataset(labels.join(run.rows(), tally), run.path, judged=True, decisions=decisions)
        label_stats = tally.stats()
        judged = (labels.manifest, label_stats)
    write_card(run.path, run.manifest, stats, sizes, judged)
    return path, sizes, stats, label_stats


def rebuild_dataset(out: Path) -> tuple[Path, dict[str, int], RunStats]:
    """Rebuild the dataset and card of a finished run folder (after people reviewed its pairs).

    Raises:
        RunDirError: The folder holds no run, or another process is writing it.
    """
    run = RunDir(out, RunDir.read_manifest(out))  # refuses a folder without a run before the lock would make one
    with run_lock(out, "dataset rebuild"):
        labels = LabelStore.of_run(out)
        if labels is not None:
            labels.drop_orphans(run.done_ids())
        path, sizes, stats, _ = build_dataset(run, labels)
    return path, sizes, stats
