"""From trajectories to datasets: TRL's preference format, an SFT split, a card, exports.

The ``preferences`` split is in TRL's conversational preference format
(``prompt`` as a list of messages, ``chosen`` and ``rejected`` as one-message
assistant lists) plus provenance columns; TRL's ``DPOTrainer`` takes it as it
is. Until the AI-feedback judge labels pairs, ``chosen`` is the final revision
and ``rejected`` the initial answer, and ``label_source`` says so.
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
    from datasets import Features

DATASET_DIR = "dataset"
CARD = "README.md"
LABEL_SOURCE = "revision_assumed_better"
"""``label_source`` of pairs whose order comes from the pipeline, not from a judge."""


def preference_row(t: Trajectory) -> dict[str, Any] | None:
    """The pair a trajectory gives, or None when no round changed its answer."""
    if not t.revised:
        return None
    return {
        "id": t.id,
        "prompt": t.prompt,
        "chosen": [{"role": "assistant", "content": t.final}],
        "rejected": [{"role": "assistant", "content": t.initial}],
        "label_source": LABEL_SOURCE,
        "category": t.category or "",
        "kind": t.kind or "",
        "principle_ids": [r.principle_id for r in t.rounds if r.changed],
        "rounds": len(t.rounds),
        "constitution_hash": t.constitution.hash,
        "policy_model": t.models["policy"].get("model", ""),
        "critic_model": t.models["critic"].get("model", ""),
        "source": t.source,
    }


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
                "category": Value("string"),
                "kind": Value("string"),
                "principle_ids": List(Value("string")),
                "rounds": Value("int32"),
                "constitution_hash": Value("string"),
                "policy_model": Value("string"),
                "critic_model": Value("string"),
                "source": Value("string"),
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


def save_dataset(rows: Iterable[Trajectory], out: Path) -> tuple[Path, dict[str, int], RunStats]:
    """Build the ``preferences`` and ``sft`` splits and save them under ``out/dataset``.

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
        for trajectory in rows:
            stats.add(trajectory)
            pair = preference_row(trajectory)
            if pair is not None:
                writers["preferences"].write(pair)
            writers["sft"].write(sft_row(trajectory))
        for writer in writers.values():
            writer.finalize()
    finally:
        for writer in writers.values():
            writer.close()
    dataset = DatasetDict({split: Dataset.from_file(str(work / f"{split}.arrow")) for split in features})
    target = out / DATASET_DIR
    tmp = out / f".{DATASET_DIR}.tmp"
    old = out / f".{DATASET_DIR}.old"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
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

    def add(self, t: Trajectory) -> None:
        """Count one trajectory."""
        self.rows += 1
        self.revised += t.revised
        self.stopped += any(r.stopped for r in t.rounds)
        self.rounds += len(t.rounds)
        self.principles.update(r.principle_id for r in t.rounds)
        self.categories[t.category or "(none)"] += 1


def write_card(out: Path, manifest: RunManifest, stats: RunStats, sizes: dict[str, int]) -> Path:
    """Write the dataset card (``README.md``) from the run's provenance."""
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
        f"**{c.id}** version {c.version} (sha256 `{c.hash}`; a copy is in `constitution.yaml`).",
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
        "- **Pair labels are not judged yet**: `chosen` is the final revision and `rejected` the initial "
        f"answer (`label_source = {LABEL_SOURCE}`). Small models often revise for the worse: read the pairs "
        "before training on them.",
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
