"""Building a run's dataset: the ``preferences`` and ``sft`` splits streamed into Arrow, their counts, exports.

Decisions people made with ``cai review`` (``reviews.jsonl``) come last and
win: a dropped pair is left out, an accepted or flipped one is the person's
order, with ``label_source = human``, ``chosen_prob`` 1 and the decision in
``human_label`` (``accepted``/``flipped``; empty for pairs nobody reviewed).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.dataset.rows import features as splits_features
from engine.dataset.rows import preference_row, sft_row
from engine.records.decisions import Decision
from engine.records.labels import Label
from engine.records.trajectory import Trajectory

DATASET_DIR = "dataset"


def save_dataset(
    rows: Iterable[tuple[Trajectory, Label | None]],
    out: Path,
    *,
    judged: bool,
    decisions: Mapping[str, Decision] | None = None,
) -> tuple[Path, dict[str, int], RunStats]:
    """Build the ``preferences`` and ``sft`` splits and save them under ``out/dataset``.

    ``rows`` are trajectories with the judge's label of each. With ``judged``
    the labels decide the pairs, and a row without a label gives no pair (it is
    counted as unlabelled); without, pairs are final revision over first answer.
    ``decisions`` (by row id) are what people decided in ``cai review``; they
    override both, except those about texts the run no longer holds (counted
    as stale and ignored).

    One pass over the rows streams them into Arrow files (memory stays flat
    however long the run) and counts what the card reports; the new dataset
    replaces the old one only once it is complete.

    Returns:
        The dataset folder, the number of rows per split, and the run's counts.
    """
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # our own bar covers the long part
    work = out / f".{DATASET_DIR}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    features = splits_features()
    writers = {split: ArrowWriter(features=f, path=str(work / f"{split}.arrow")) for split, f in features.items()}
    stats = RunStats()
    try:
        for trajectory, label in rows:
            stats.add(trajectory)
            decision = decisions.get(trajectory.id) if decisions else None
            if decision is not None and not decision.applies(trajectory):
                stats.stale_decisions += 1
                decision = None
            note = decision.note if decision is not None else ""
            if decision is not None and decision.action is None:  # a note only: the pair stays as it was
                decision = None
            if decision is not None:
                stats.count_decision(decision, label)
                if judged and label is None:
                    stats.unlabelled += 1
                pair = preference_row(trajectory, label, decision)
            elif not judged:
                pair = preference_row(trajectory)
            elif label is not None:
                pair = preference_row(trajectory, label)
            else:
                pair = None
                stats.unlabelled += 1
            if pair is not None:
                pair["human_note"] = note
                writers["preferences"].write(pair)
            writers["sft"].write(sft_row(trajectory))
        counts = {split: writer.finalize()[0] for split, writer in writers.items()}
    finally:
        for writer in writers.values():
            writer.close()
    dataset = DatasetDict(
        {
            # An empty split is built from nothing: `datasets` cannot read back an empty Arrow file or a
            # dataset saved with zero shards, so empty splits are also saved as one (empty) shard.
            split: Dataset.from_file(str(work / f"{split}.arrow"))
            if counts[split]
            else Dataset.from_dict({name: [] for name in f}, features=f)
            for split, f in features.items()
        }
    )
    target = out / DATASET_DIR
    tmp = out / f".{DATASET_DIR}.tmp"
    old = out / f".{DATASET_DIR}.old"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    dataset.save_to_disk(str(tmp), num_shards={split: 1 for split, n in counts.items() if not n})
    sizes = {split: len(data) for split, data in dataset.items()}
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    for leftover in (old, work):
        shutil.rmtree(leftover, ignore_errors=True)
    return target, sizes, stats


def export(out: Path, fmt: str, target: Path | None = None) -> list[Path]:
    """Write each split of a run's dataset as ``<split>.jsonl`` or ``<split>.parquet``."""
    from datasets import load_from_disk

    dataset = load_from_disk(str(out / DATASET_DIR))
    target = target or out / "export"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for split, data in dataset.items():
        path = target / f"{split}.{fmt}"
        if fmt == "jsonl":
            data.to_json(str(path), lines=True, force_ascii=False)
        else:
            data.to_parquet(str(path))
        written.append(path)
    return written


@dataclass
class RunStats:
    """Counts for the card and the summary, gathered in one pass over the rows."""

    rows: int = 0
    revised: int = 0
    stopped: int = 0
    rounds: int = 0
    principles: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    unlabelled: int = 0
    """Rows the judge has not labelled yet (only when the run has labels)."""
    human: Counter[str] = field(default_factory=Counter)
    """Decisions people made in ``cai review``: accept, flip, drop."""
    judge_agreed: int = 0
    """Reviewed pairs the judge had labelled, where the person kept the judge's order."""
    judge_disagreed: int = 0
    """... and where the person flipped it."""
    stale_decisions: int = 0
    """Decisions about texts the run no longer holds (ignored)."""
    constitutions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Rows per constitution they were made under: (id, version, hash)."""
    made_by: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Rows per (policy, critic, sampling) they were made with."""

    def add(self, t: Trajectory) -> None:
        """Count one trajectory."""
        self.rows += 1
        self.revised += t.revised
        self.stopped += any(r.stopped for r in t.rounds)
        self.rounds += len(t.rounds)
        self.principles.update(r.principle_id for r in t.rounds)
        self.categories[t.category or "(none)"] += 1
        c = t.constitution
        self.constitutions[(c.id, c.version, c.hash)] += 1
        s = t.sampling
        sampling = f"temperature {s.temperature}, top-p {s.top_p}, {s.max_new_tokens} tokens, seed {t.seed}"
        self.made_by[(_model_name(t.models.get("policy")), _model_name(t.models.get("critic")), sampling)] += 1

    def count_decision(self, decision: Decision, label: Label | None) -> None:
        """Count a person's decision, and whether it agrees with the judge's label of the row."""
        self.human[decision.action or ""] += 1
        if label is None or label.status != "labelled" or decision.action == "drop":
            return
        if (decision.chosen_from, decision.rejected_from) == (label.chosen_from, label.rejected_from):
            self.judge_agreed += 1
        elif (decision.rejected_from, decision.chosen_from) == (label.chosen_from, label.rejected_from):
            self.judge_disagreed += 1


def _model_name(described: dict[str, Any] | None) -> str:
    if not described:
        return "?"
    return str(described.get("model") or described.get("name") or described.get("spec") or described)
