"""The pairs a preference model trains on: several sources mixed, labels made uniform, a held-out part set aside.

``cai train rm`` takes ``--data`` once or more. Each source is one of:

- a ``cai generate`` run folder (or its ``dataset/``, or any ``save_to_disk``
  folder): its ``preferences`` split, with newer ``cai review`` decisions
  applied first (:func:`engine.train.data.load_split`);
- a ``.jsonl`` or ``.json`` file of preference rows in TRL's format;
- ``hf:NAME``: a preference dataset on the hub (split ``train`` unless
  ``--split`` says otherwise).

Rows in TRL's format have ``chosen`` and ``rejected``, with an explicit
``prompt`` or not, as chat messages or as plain text; every row is turned into
the conversational form (``prompt`` messages, one assistant message each for
``chosen`` and ``rejected``), so sources of different shapes mix. A row's
label is its ``chosen_prob`` (or ``margin``) when it has one; a person's
decision (``label_source`` ``human``) always counts as a sure, hard label;
other rows are hard. ``--labels`` and ``--min-margin`` then apply to the mix
as for DPO (:mod:`engine.train.data`).

The held-out part (``--heldout``, a fraction) is chosen by a seeded hash of
each row's prompt, so pairs of one prompt never fall on both sides and the
same data always splits the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backends.base import first_line
from engine.train.data import (
    LABEL_MODES,
    PAIRS_EMPTY,
    PREFERENCES_SPLIT,
    TARGET_COLUMN,
    WEIGHT_COLUMN,
    TrainData,
    kept_by_margin,
    load_split,
    read_labels,
    record_provenance,
    resolve_mode,
    targets_and_weights,
)
from engine.train.errors import TrainError

if TYPE_CHECKING:
    from datasets import Dataset

SOURCE_COLUMN = "cai_source"
"""Which ``--data`` source a row came from (for the per-source counts)."""
_JSON_SUFFIXES = (".jsonl", ".json")


def _read_source(source: str, split: str | None, notes: list[str]) -> tuple[Dataset, Path | None, Path | None]:
    """(rows, dataset folder, run folder) of one ``--data`` source."""
    from datasets import load_dataset

    if source.startswith("hf:"):
        name = source.removeprefix("hf:")
        try:
            return load_dataset(name, split=split or "train"), None, None
        except Exception as exc:  # datasets raises many kinds for a missing or offline dataset
            raise TrainError(f"{source}: cannot load the dataset: {first_line(exc)}") from None
    path = Path(source).expanduser()
    if path.suffix in _JSON_SUFFIXES:
        if not path.is_file():
            raise TrainError(f"{source}: no such file; give a JSONL file of preference rows, a run folder or hf:NAME")
        try:
            return load_dataset("json", data_files=str(path), split="train"), None, None
        except Exception as exc:
            raise TrainError(f"{source}: cannot read it as JSON rows: {first_line(exc)}") from None
    data, dataset_dir, run_dir = load_split(path, split or PREFERENCES_SPLIT, PAIRS_EMPTY, notes)
    return data, dataset_dir, run_dir


def _messages(value: Any, role: str, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise TrainError(f"{where}: expected text or a list of {{role, content}} messages, not {type(value).__name__}")


def _conversational(row: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen text, rejected text) of one row in any of TRL's preference shapes."""
    chosen = _messages(row["chosen"], "assistant", where)
    rejected = _messages(row["rejected"], "assistant", where)
    if row.get("prompt") is not None:
        prompt = _messages(row["prompt"], "user", where)
    else:  # implicit prompt: the shared turns before each side's last message
        prompt = chosen[:-1]
        if rejected[:-1] != prompt:
            raise TrainError(
                f"{where}: without a 'prompt' column, chosen and rejected must share every turn but the last"
            )
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise TrainError(f"{where}: chosen and rejected must each end with an assistant message")
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


def _prompt_key(prompt: list[dict[str, str]], seed: int) -> float:
    """A number in [0, 1) fixed by the prompt and the seed: rows below the held-out fraction are held out."""
    text = json.dumps([seed, prompt], sort_keys=True, ensure_ascii=False)
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def reward_data(
    sources: Sequence[str],
    split: str | None = None,
    *,
    labels: str = "auto",
    min_margin: float = 0.0,
    limit: int | None = None,
    heldout: float = 0.1,
    seed: int = 0,
) -> TrainData:
    """The mixed pairs of every source, with per-pair targets for the label mode and a held-out part.

    Args:
        sources: ``--data`` values (see the module docstring).
        split: Split of folder and hub sources (default ``preferences`` for folders, ``train`` for the hub).
        labels: ``auto``, ``hard``, ``weighted`` or ``soft``.
        min_margin: Drop judged pairs whose margin is below this.
        limit: Use only the first N pairs of the mix (before the held-out part is set aside).
        heldout: Fraction of prompts held out to measure accuracy (0: none).
        seed: Seed of the held-out choice.

    Raises:
        TrainError: A source that cannot be read, rows without chosen/rejected, bad probabilities, or no pair left.
    """
    from datasets import Dataset

    if not sources:
        raise TrainError("cai train rm needs --data: a `cai generate` run folder, a JSONL file of pairs, or hf:NAME")
    if labels not in LABEL_MODES:
        raise TrainError(f"unknown label mode {labels!r}: use one of {', '.join(LABEL_MODES)}")
    if not 0.0 <= heldout < 1.0:
        raise TrainError(f"--heldout is a fraction of the prompts in [0, 1), not {heldout}")
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    probs: list[float | None] = []
    margins: list[float | None] = []
    first_dir: Path | None = None
    first_run: Path | None = None
    for source in sources:
        data, dataset_dir, run_dir = _read_source(source, split, notes)
        where = str(dataset_dir or source)
        missing = [c for c in ("chosen", "rejected") if c not in data.column_names]
        if missing:
            raise TrainError(
                f"{where}: no {' or '.join(map(repr, missing))} column (columns: {', '.join(data.column_names)}); "
                "cai train rm needs preference pairs: chosen and rejected, with or without a prompt"
            )
        if len(data) == 0:
            raise TrainError(f"{where}: no pairs: {PAIRS_EMPTY}")
        if first_dir is None and first_run is None:
            first_dir, first_run = dataset_dir, run_dir
        p, m = read_labels(data, where)
        humans = data["label_source"] if "label_source" in data.column_names else [None] * len(data)
        for i, row in enumerate(data):
            prompt, chosen, rejected = _conversational(row, f"{where}: row {i}")
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    SOURCE_COLUMN: source,
                }
            )
            human = humans[i] == "human"
            probs.append(1.0 if human else p[i])
            margins.append(1.0 if human else m[i])
    total = len(rows)
    judged = sum(p is not None for p in probs)
    mode = resolve_mode(labels, judged, notes)
    keep = kept_by_margin(margins, judged, min_margin, ", ".join(sources), notes)
    dropped = total - len(keep)
    if limit is not None:
        keep = keep[:limit]
    if mode in ("weighted", "soft"):
        targets, weights = targets_and_weights(mode, [probs[i] for i in keep], [margins[i] for i in keep])
        for i, target, weight in zip(keep, targets, weights, strict=True):
            rows[i][TARGET_COLUMN], rows[i][WEIGHT_COLUMN] = target, weight
    held = [i for i in keep if heldout > 0 and _prompt_key(rows[i]["prompt"], seed) < heldout]
    train = [i for i in keep if i not in set(held)]
    if not train:
        raise TrainError(f"all {len(keep)} pairs fell in the held-out part; lower --heldout or give more pairs")
    if heldout > 0 and not held:
        notes.append(
            f"no pair held out: {len(keep)} pairs are too few for --heldout {heldout}; accuracy is not measured"
        )
    counts = Counter(rows[i][SOURCE_COLUMN] for i in train)
    if len(sources) > 1:
        notes.append("pairs per source: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in sources))
    out = TrainData(
        Dataset.from_list([rows[i] for i in train]),
        Path(sources[0]) if first_dir is not None else None,
        first_dir,
        split or PREFERENCES_SPLIT,
        total,
        dropped,
        mode,
        notes,
        run_dir=first_run,
        source=", ".join(sources),
        heldout=Dataset.from_list([rows[i] for i in held]) if held else None,
    )
    record_provenance(out)
    return out


__all__ = ["SOURCE_COLUMN", "reward_data"]
