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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.records import RunManifest, Trajectory

if TYPE_CHECKING:
    from datasets import DatasetDict

DATASET_DIR = "dataset"
CARD = "README.md"
LABEL_SOURCE = "revision_assumed_better"
"""``label_source`` of pairs whose order comes from the pipeline, not from a judge."""


def preference_rows(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """One pair per trajectory whose answer the rounds changed."""
    return [
        {
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
        for t in trajectories
        if t.revised
    ]


def sft_rows(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """Every prompt with its final answer, as chat ``messages``."""
    return [
        {
            "id": t.id,
            "messages": [*t.prompt, {"role": "assistant", "content": t.final}],
            "revised": t.revised,
            "category": t.category or "",
            "constitution_hash": t.constitution.hash,
        }
        for t in trajectories
    ]


def build_dataset(trajectories: Sequence[Trajectory]) -> DatasetDict:
    """The ``preferences`` and ``sft`` splits as a Hugging Face ``DatasetDict``."""
    from datasets import Dataset, DatasetDict, Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    preferences = Features(
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
    )
    sft = Features(
        {
            "id": Value("string"),
            "messages": List(message),
            "revised": Value("bool"),
            "category": Value("string"),
            "constitution_hash": Value("string"),
        }
    )
    return DatasetDict(
        {
            "preferences": Dataset.from_list(preference_rows(trajectories), features=preferences),
            "sft": Dataset.from_list(sft_rows(trajectories), features=sft),
        }
    )


def save_dataset(dataset: DatasetDict, out: Path) -> Path:
    """Save under ``out/dataset`` atomically (a half-written dataset never replaces a good one)."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # our own bar covers the long part; saving is quick
    target = out / DATASET_DIR
    tmp = out / f".{DATASET_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    old = out / f".{DATASET_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_card(out: Path, manifest: RunManifest, trajectories: Sequence[Trajectory], dataset: DatasetDict) -> Path:
    """Write the dataset card (``README.md``) from the run's provenance."""
    n = len(trajectories)
    revised = sum(t.revised for t in trajectories)
    stopped = sum(any(r.stopped for r in t.rounds) for t in trajectories)
    rounds = sum(len(t.rounds) for t in trajectories)
    used = Counter(r.principle_id for t in trajectories for r in t.rounds)
    categories = Counter(t.category or "(none)" for t in trajectories)
    c = manifest.constitution
    s = manifest.sampling
    pairs = len(dataset["preferences"])
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
        f"- Each prompt got an initial answer, then up to {manifest.revisions} rounds of critique and revision, "
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
        f"| `sft` rows | {len(dataset['sft'])} |",
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
