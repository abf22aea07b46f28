"""From trajectories to datasets: TRL's preference format, an SFT split, a card, exports.

The ``preferences`` split is in TRL's conversational preference format
(``prompt`` as a list of messages, ``chosen`` and ``rejected`` as one-message
assistant lists) plus provenance columns; TRL's ``DPOTrainer`` takes it as it
is. When the AI-feedback judge labelled the run (:mod:`engine.labels`), a
pair is the judge's chosen and rejected candidate with its soft label
(``chosen_prob``) and margin, and rows the judge could not separate are left
out; without a judge, ``chosen`` is the final revision and ``rejected`` the
initial answer, and ``label_source`` says so.

Decisions people made with ``cai review`` (``reviews.jsonl``) come last and
win: a dropped pair is left out, an accepted or flipped one is the person's
order, with ``label_source = human``, ``chosen_prob`` 1 and the decision in
``human_label`` (``accepted``/``flipped``; empty for pairs nobody reviewed).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.records import RunManifest, Trajectory

if TYPE_CHECKING:
    from collections.abc import Mapping

    from datasets import Features

    from engine.feedback import JudgeSettings, LabelStats
    from engine.labels import PairLabel
    from engine.review.decisions import Decision

DATASET_DIR = "dataset"
CARD = "README.md"
LABEL_SOURCE = "revision_assumed_better"
"""``label_source`` of pairs whose order comes from the pipeline, not from a judge."""
JUDGE_LABEL_SOURCE = "ai_judge"
"""``label_source`` of pairs ordered by the AI-feedback judge."""


def preference_row(
    t: Trajectory, label: PairLabel | None = None, decision: Decision | None = None
) -> dict[str, Any] | None:
    """The pair a trajectory gives, or None when it gives none.

    Without a label: final revision over initial answer, None when no round
    changed the answer. With the judge's label: its chosen and rejected
    candidates, None when the judge dropped the row (tie, low margin,
    unreadable) or had nothing to compare. A person's ``decision`` (one that
    :func:`decision_applies` to ``t``) overrides both: None for a dropped
    pair, else the person's order.
    """
    human_label, human_note = "", ""
    if decision is not None:
        from engine.review.decisions import HUMAN_LABEL_SOURCE

        if decision.action not in ("accept", "flip"):
            return None
        texts = candidate_texts(t)
        chosen, rejected, source = texts[decision.chosen_from], texts[decision.rejected_from], HUMAN_LABEL_SOURCE
        chosen_from, rejected_from, prob, margin = decision.chosen_from, decision.rejected_from, 1.0, 1.0
        judge = label.judge_model if label is not None else ""
        judge_principles = list(label.principles) if label is not None else []
        human_label, human_note = decision.human_label, decision.note
    elif label is None:
        if not t.revised:
            return None
        chosen, rejected, source = t.final, t.initial, LABEL_SOURCE
        chosen_from = next((f"revision_{n}" for n in range(len(t.rounds), 0, -1) if t.rounds[n - 1].changed), "")
        rejected_from, prob, margin, judge, judge_principles = "initial", None, None, "", []
    else:
        if label.status != "labelled" or label.chosen_from is None or label.rejected_from is None:
            return None
        texts = candidate_texts(t)
        chosen, rejected, source = texts[label.chosen_from], texts[label.rejected_from], JUDGE_LABEL_SOURCE
        chosen_from, rejected_from = label.chosen_from, label.rejected_from
        prob, margin, judge = label.chosen_prob, label.margin, label.judge_model
        judge_principles = list(label.principles)
    return {
        "id": t.id,
        "prompt": t.prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "label_source": source,
        "chosen_prob": prob,
        "margin": margin,
        "chosen_from": chosen_from,
        "rejected_from": rejected_from,
        "judge_model": judge,
        "judge_principles": judge_principles,
        "category": t.category or "",
        "kind": t.kind or "",
        "principle_ids": [r.principle_id for r in t.rounds if r.changed],
        "rounds": len(t.rounds),
        "constitution_hash": t.constitution.hash,
        "policy_model": t.models["policy"].get("model", ""),
        "critic_model": t.models["critic"].get("model", ""),
        "source": t.source,
        "human_label": human_label,
        "human_note": human_note,
    }


def decision_applies(t: Trajectory, decision: Decision) -> bool:
    """Whether a person's decision is about this trajectory's texts (not those of a run since regenerated)."""
    from engine.review.decisions import texts_hash

    texts = candidate_texts(t)
    chosen, rejected = texts.get(decision.chosen_from), texts.get(decision.rejected_from)
    return chosen is not None and rejected is not None and texts_hash(chosen, rejected) == decision.texts_hash


def candidate_texts(t: Trajectory) -> dict[str, str]:
    """The texts a label's ``chosen_from`` / ``rejected_from`` name: ``initial`` and ``revision_N``."""
    texts = {"initial": t.initial}
    for number, step in enumerate(t.rounds, start=1):
        if step.revision is not None:
            texts[f"revision_{number}"] = step.revision
    return texts


def sft_row(t: Trajectory) -> dict[str, Any]:
    """A prompt with its final answer, as chat ``messages``."""
    return {
        "id": t.id,
        "messages": [*t.prompt, {"role": "assistant", "content": t.final}],
        "revised": t.revised,
        "category": t.category or "",
        "constitution_hash": t.constitution.hash,
    }


def _features() -> dict[str, Features]:
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return {
        "preferences": Features(
            {
                "id": Value("string"),
                "prompt": List(message),
                "chosen": List(message),
                "rejected": List(message),
                "label_source": Value("string"),
                "chosen_prob": Value("float64"),
                "margin": Value("float64"),
                "chosen_from": Value("string"),
                "rejected_from": Value("string"),
                "judge_model": Value("string"),
                "judge_principles": List(Value("string")),
                "category": Value("string"),
                "kind": Value("string"),
                "principle_ids": List(Value("string")),
                "rounds": Value("int32"),
                "constitution_hash": Value("string"),
                "policy_model": Value("string"),
                "critic_model": Value("string"),
                "source": Value("string"),
                "human_label": Value("string"),
                "human_note": Value("string"),
            }
        ),
        "sft": Features(
            {
                "id": Value("string"),
                "messages": List(message),
                "revised": Value("bool"),
                "category": Value("string"),
                "constitution_hash": Value("string"),
            }
        ),
    }


def save_dataset(
    rows: Iterable[tuple[Trajectory, PairLabel | None]],
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
    features = _features()
    writers = {split: ArrowWriter(features=f, path=str(work / f"{split}.arrow")) for split, f in features.items()}
    stats = RunStats()
    try:
        for trajectory, label in rows:
            stats.add(trajectory)
            decision = decisions.get(trajectory.id) if decisions else None
            if decision is not None and not decision_applies(trajectory, decision):
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

    def count_decision(self, decision: Decision, label: PairLabel | None) -> None:
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


def write_card(
    out: Path,
    manifest: RunManifest,
    stats: RunStats,
    sizes: dict[str, int],
    judged: tuple[str, JudgeSettings, LabelStats] | None = None,
) -> Path:
    """Write the dataset card (``README.md``) from the run's provenance.

    ``judged`` is (judge model, judge settings, label statistics) when the judge labelled the pairs.
    """
    n, revised, stopped, rounds = stats.rows, stats.revised, stats.stopped, stats.rounds
    used, categories = stats.principles, stats.categories
    c = manifest.constitution
    s = manifest.sampling
    pairs = sizes["preferences"]
    lines = [
        "---",
        "tags: [constitutional-ai, rlaif, preference, dpo, synthetic]",
        "configs:",
        "  - config_name: default",
        "    data_files:",
        "      - {split: preferences, path: dataset/preferences/*.arrow}",
        "      - {split: sft, path: dataset/sft/*.arrow}",
        "---",
        "",
        f"# Constitutional self-critique data: {c.id}",
        "",
        f"Made by `cai generate` from the prompts `{manifest.prompts}` under the constitution "
        f"**{c.id}** version {c.version} (sha256 `{c.hash}`; a copy is in `constitution.yaml`)."
        + (" Not every row was: see *Rows made under other settings*." if _mixed(stats, manifest) else ""),
        "",
        "## How the data was made",
        "",
        f"- Policy model (answers and revises): `{manifest.policy}`; critic model: `{manifest.critic}`.",
        f"- Sampling: temperature {s.temperature}, top-p {s.top_p}, at most {s.max_new_tokens} new tokens, "
        f"seed {manifest.seed}.",
        f"- Each prompt got an initial answer, then up to {manifest.revisions} "
        f"round{'s' * (manifest.revisions != 1)} of critique and revision, "
        "each under one principle sampled by weight"
        + (", stopping early when the critique found nothing to change." if manifest.stop_early else "."),
        *_labelling(judged),
        "",
        "## Contents",
        "",
        "| | count |",
        "| --- | ---: |",
        f"| prompts | {n} |",
        f"| answers changed by revision | {revised} ({revised / max(n, 1):.0%}) |",
        f"| rows that stopped early (nothing to change) | {stopped} |",
        f"| critique rounds | {rounds} |",
        f"| `preferences` pairs | {pairs} |",
        f"| `sft` rows | {sizes['sft']} |",
        "",
        *_mixed_settings(stats, manifest),
        *_label_quality(judged, stats),
        *_human_review(stats),
        "Principles used: " + ", ".join(f"`{k}` {v}" for k, v in used.most_common()) + ".",
        "",
        "Categories: " + ", ".join(f"{k} {v}" for k, v in categories.most_common()) + ".",
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_from_disk",
        f'data = load_from_disk("{out / DATASET_DIR}")',
        'data["preferences"]  # prompt / chosen / rejected, TRL conversational format: DPOTrainer takes it as is',
        'data["sft"]          # messages: prompt + final answer, for SFTTrainer',
        "```",
        "",
        "Every row of `trajectories.jsonl` keeps the full history: the prompt, the initial answer, "
        "each round's principle, critique and revision, models, sampling and timings.",
        "",
    ]
    path = out / CARD
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _mixed(stats: RunStats, manifest: RunManifest) -> bool:
    return len(stats.constitutions) > 1 or len(stats.made_by) > 1 or bool(manifest.superseded)


def _mixed_settings(stats: RunStats, manifest: RunManifest) -> list[str]:
    """The card's account of a folder whose settings were replaced with ``--force``: what made which rows."""
    if not _mixed(stats, manifest):
        return []
    current = manifest.constitution
    lines = [
        "## Rows made under other settings",
        "",
        "This folder's settings were replaced with `--force`, so its rows were not all made alike; each row of "
        "`trajectories.jsonl` records its own constitution, models and sampling. The settings above are the "
        "latest ones.",
        "",
        "| constitution | version | sha256 | rows | copy |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for (cid, version, digest), count in stats.constitutions.most_common():
        copy = "`constitution.yaml`" if digest == current.hash else f"`constitutions/{cid}-{digest[:12]}.yaml`"
        lines.append(f"| {cid} | {version} | `{digest[:12]}` | {count} | {copy} |")
    lines += ["", "| policy | critic | sampling | rows |", "| --- | --- | --- | ---: |"]
    lines += [f"| `{p}` | `{c}` | {s} | {n} |" for (p, c, s), n in stats.made_by.most_common()]
    if manifest.superseded:
        lines += ["", "Earlier settings of this folder (`superseded` in `run.json`):", ""]
        for number, before in enumerate(manifest.superseded, 1):
            diffs = before.differences(manifest)
            lines.append(f"{number}. " + ("; ".join(d.replace(" (in the folder)", "") for d in diffs) or "the same"))
    return [*lines, ""]


def _labelling(judged: tuple[str, JudgeSettings, LabelStats] | None) -> list[str]:
    if judged is None:
        return [
            "- **Pair labels are not judged**: `chosen` is the final revision and `rejected` the initial "
            f"answer (`label_source = {LABEL_SOURCE}`). Small models often revise for the worse: read the pairs "
            "before training on them, or label them with `cai label`."
        ]
    from engine.labels import judge_settings_summary

    model, settings, _ = judged
    return [
        "- Pairs are labelled by the AI-feedback judge (`label_source = ai_judge`): among the initial answer "
        "and the revisions, `chosen` is the one the judge prefers and `rejected` the one it likes least; "
        "`chosen_prob` is the judge's probability that `chosen` is better (a soft label), `margin` = "
        "2 * chosen_prob - 1.",
        *judge_settings_summary(settings, model),
    ]


def _label_quality(judged: tuple[str, JudgeSettings, LabelStats] | None, stats: RunStats) -> list[str]:
    if judged is None:
        return []
    report = judged[2].render()
    unlabelled = f"\n{stats.unlabelled} rows are not labelled yet (run `cai label`)." if stats.unlabelled else ""
    return ["## Label quality", "", "```text", report + unlabelled, "```", ""]


def _human_review(stats: RunStats) -> list[str]:
    reviewed = sum(stats.human.values())
    if not reviewed and not stats.stale_decisions:
        return []
    h = stats.human
    lines = [
        "## Human review",
        "",
        f"People reviewed {reviewed} pairs with `cai review` (`reviews.jsonl`): {h['accept']} accepted, "
        f"{h['flip']} flipped, {h['drop']} dropped. Dropped pairs are left out; accepted and flipped pairs are "
        "in the person's order with `label_source = human`, `chosen_prob` 1 and the decision in `human_label`.",
    ]
    judged = stats.judge_agreed + stats.judge_disagreed
    if judged:
        lines.append(
            f"On the {judged} judge-labelled pairs a person accepted or flipped, the judge agreed with the person "
            f"{stats.judge_agreed} times ({stats.judge_agreed / judged:.0%})."
        )
    if stats.stale_decisions:
        lines.append(
            f"{stats.stale_decisions} decisions are about texts this run no longer holds (it was regenerated) "
            "and were ignored."
        )
    return [*lines, ""]


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
