"""Training data: a `cai generate` run folder (or any saved dataset) checked and shaped for TRL.

``--data`` is a run folder (its ``dataset/`` is used, and ``run.json`` says
which constitution made it), the ``dataset/`` folder itself, or any folder
written by ``save_to_disk`` (a ``DatasetDict`` or a single ``Dataset``).
A run's dataset is first rebuilt when people made decisions in ``cai review``
since it was built (:func:`engine.reviewed.apply_new_decisions`): what is
trained on always has the dropped pairs left out and the flipped ones swapped.

SFT trains on the ``sft`` split: each row's ``messages`` become a prompt (all
turns but the last) and a completion (the final answer), so the loss falls on
the answer only. DPO trains on the ``preferences`` split as it is, in TRL's
preference format.

Soft labels
    When the AI-feedback judge labelled the pairs, the preferences carry
    ``chosen_prob`` (the judged probability that ``chosen`` beats ``rejected``)
    and ``margin`` (``2 * chosen_prob - 1``). ``--min-margin`` drops pairs the
    judge was unsure about, in any mode. The label modes are:

    ``hard``
        Every pair counts fully (plain DPO; the probabilities are ignored).
    ``weighted``
        Each pair's loss is multiplied by its margin: a sure pair counts
        fully, a coin flip not at all.
    ``soft``
        The probability is the target of the sigmoid loss (label smoothing per
        pair): ``-(p log s(b d) + (1 - p) log s(-b d))``.
    ``auto``
        ``soft`` when the pairs carry probabilities, else ``hard``.

    A pair without a probability (not judged) counts as a hard label in every
    mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.train.errors import TrainError

if TYPE_CHECKING:
    from datasets import Dataset

LABEL_MODES = ("auto", "hard", "weighted", "soft")
TARGET_COLUMN = "cai_target_prob"
"""Per-pair target probability added for the ``weighted`` and ``soft`` modes."""
WEIGHT_COLUMN = "cai_pair_weight"
"""Per-pair loss weight added for the ``weighted`` and ``soft`` modes."""
PROB_COLUMN = "chosen_prob"
MARGIN_COLUMN = "margin"
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
SFT_SPLIT = "sft"
"""The split ``cai train sft`` (and ``grpo --data``) reads by default."""
PREFERENCES_SPLIT = "preferences"
"""The split ``cai train dpo`` reads by default."""
SFT_EMPTY = "the run produced no rows; generate with more prompts"
PAIRS_EMPTY = (
    "no pair to train on (no revision changed an answer, or the judge dropped every pair); "
    "generate with more prompts (--limit) or more --revisions"
)


@dataclass
class TrainData:
    """The rows a run trains on and where they came from (for the model card)."""

    dataset: Dataset
    folder: Path | None
    """The folder given with ``--data`` (None for GRPO prompts from a prompt set)."""
    dataset_dir: Path | None
    split: str
    total: int
    """Rows in the split before filtering."""
    dropped: int = 0
    """Pairs dropped by ``--min-margin``."""
    labels: str = "hard"
    """DPO: the label mode in effect (``auto`` resolved); GRPO: the reward mode (group or reference)."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know (printed, and written into the card)."""
    constitution: dict[str, str] | None = None
    """``id``, ``version`` and ``hash`` from the run manifest, when there is one."""
    constitution_hashes: list[str] = field(default_factory=list)
    """Distinct ``constitution_hash`` values of the rows used."""
    run_dir: Path | None = None
    source: str = ""
    """Where the rows came from, for the card (default: the data folder)."""
    heldout: Dataset | None = None
    """Reward model: the pairs set aside to measure accuracy (None: none)."""

    def __post_init__(self) -> None:
        if not self.source and self.folder is not None:
            self.source = str(self.folder.resolve())

    @property
    def rows(self) -> int:
        """Rows used for training."""
        return len(self.dataset)


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def locate(folder: Path) -> tuple[Path, Path | None]:
    """The dataset folder inside ``folder`` and the run folder holding it (if any).

    Raises:
        TrainError: No such folder, or no dataset in it.
    """
    if not folder.exists():
        raise TrainError(f"{folder}: no such data folder; give a `cai generate` output folder (--out of generate)")
    if not folder.is_dir():
        raise TrainError(f"{folder}: not a folder; give a `cai generate` output folder or a saved dataset folder")
    if _is_saved_dataset(folder / "dataset"):
        return folder / "dataset", folder
    if _is_saved_dataset(folder):
        run = folder.parent if (folder.parent / "run.json").is_file() else None
        return folder, run
    if (folder / "trajectories.jsonl").is_file():
        raise TrainError(
            f"{folder}: the run has no dataset yet (it was stopped before the end); "
            f"run the same `cai generate --out {folder}` again to finish it"
        )
    raise TrainError(
        f"{folder}: holds no dataset (no dataset/ folder, no dataset_dict.json); "
        "give a `cai generate` output folder or a folder written by save_to_disk"
    )


def _saved_rows_missing(folder: Path) -> bool:
    """True when a saved split has no data files: datasets writes none for an empty split, then cannot load it."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def apply_reviews(dataset_dir: Path, run_dir: Path | None, notes: list[str] | None = None) -> None:
    """Rebuild a run's dataset when review decisions are newer than it; say so in ``notes``.

    Raises:
        TrainError: The rebuild failed (the message says why and what to do).
    """
    from engine.dataset import DATASET_DIR
    from engine.reviewed import apply_new_decisions
    from engine.rundir import RunDirError

    if run_dir is None or dataset_dir.resolve() != (run_dir / DATASET_DIR).resolve():
        return
    try:
        done = apply_new_decisions(run_dir)
    except RunDirError as exc:
        raise TrainError(f"the review decisions cannot be applied before training: {exc}") from None
    if done is not None and notes is not None:
        notes.append(done.summary())


def load_split(
    folder: Path, split: str, empty_hint: str = "nothing to train on", notes: list[str] | None = None
) -> tuple[Dataset, Path, Path | None]:
    """Load one split of the dataset in ``folder``, with a run's newer review decisions applied first.

    Args:
        folder: Run folder, its ``dataset/`` folder, or a saved dataset folder.
        split: The split to load.
        empty_hint: What to do when the split is empty.
        notes: Gets a line when the dataset was rebuilt with review decisions.

    Raises:
        TrainError: No dataset, no such split, an empty split, an unreadable
            dataset, or newer review decisions that cannot be applied.
    """
    from datasets import Dataset, DatasetDict, load_from_disk

    dataset_dir, run_dir = locate(folder)
    apply_reviews(dataset_dir, run_dir, notes)
    is_dict = (dataset_dir / "dataset_dict.json").is_file()
    if is_dict:
        try:
            splits = json.loads((dataset_dir / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            raise TrainError(f"{dataset_dir}: unreadable dataset_dict.json") from None
        if split not in splits:
            raise TrainError(f"{dataset_dir}: no split {split!r} (splits: {', '.join(splits) or 'none'}); use --split")
    if _saved_rows_missing(dataset_dir / split if is_dict else dataset_dir):
        raise TrainError(f"{dataset_dir}: split {split!r} is empty: {empty_hint}")
    try:
        loaded = load_from_disk(str(dataset_dir))
    except Exception as exc:  # datasets raises many kinds on damaged folders
        raise TrainError(f"{dataset_dir}: cannot read the dataset: {exc}") from None
    if isinstance(loaded, DatasetDict):
        data = loaded[split]
    elif isinstance(loaded, Dataset):
        data = loaded
    else:  # pragma: no cover - load_from_disk returns one of the two
        raise TrainError(f"{dataset_dir}: not a map-style dataset")
    return data, dataset_dir, run_dir


def _missing(data: Dataset, columns: tuple[str, ...]) -> list[str]:
    return [c for c in columns if c not in data.column_names]


def _check_nonempty(data: Dataset, where: str, split: str, hint: str) -> None:
    if len(data) == 0:
        raise TrainError(f"{where}: split {split!r} is empty: {hint}")


def record_provenance(out: TrainData) -> None:
    if out.run_dir is not None:
        try:
            manifest = json.loads((out.run_dir / "run.json").read_text(encoding="utf-8"))
            c = manifest["constitution"]
            out.constitution = {"id": str(c["id"]), "version": str(c["version"]), "hash": str(c["hash"])}
        except (OSError, ValueError, KeyError, TypeError):
            out.notes.append(f"{out.run_dir / 'run.json'}: unreadable run manifest; provenance taken from the rows")
    if "constitution_hash" in out.dataset.column_names and len(out.dataset):
        out.constitution_hashes = sorted({str(h) for h in out.dataset["constitution_hash"] if h})


def sft_data(
    folder: Path, split: str | None = None, *, revised_only: bool = False, limit: int | None = None
) -> TrainData:
    """The SFT rows as a conversational prompt/completion dataset.

    Args:
        folder: Run folder or saved dataset folder.
        split: Split name (default ``sft``).
        revised_only: Keep only rows whose answer a revision changed (needs a ``revised`` column).
        limit: Use only the first N rows.

    Raises:
        TrainError: Missing columns, an empty split, or rows without a final answer.
    """
    split = split or SFT_SPLIT
    notes: list[str] = []
    data, dataset_dir, run_dir = load_split(folder, split, SFT_EMPTY, notes)
    where = str(dataset_dir)
    total = len(data)
    has_messages = "messages" in data.column_names
    if not has_messages and _missing(data, ("prompt", "completion")):
        raise TrainError(
            f"{where}: split {split!r} has neither a 'messages' column nor 'prompt' and 'completion' "
            f"(columns: {', '.join(data.column_names)}); cai train sft needs chat messages ending with the answer"
        )
    _check_nonempty(data, where, split, SFT_EMPTY)
    if revised_only:
        if "revised" not in data.column_names:
            raise TrainError(f"{where}: --revised-only needs a 'revised' column, which split {split!r} lacks")
        data = data.filter(lambda revised: bool(revised), input_columns="revised")
        _check_nonempty(data, where, split, "no row's answer was changed by a revision (drop --revised-only)")
        notes.append(f"{len(data)} of {total} rows kept: only answers a revision changed")
    if has_messages:
        first = data[0]["messages"]
        if not isinstance(first, list) or not first or not isinstance(first[-1], dict) or "role" not in first[-1]:
            raise TrainError(f"{where}: 'messages' must be lists of {{role, content}} messages")

        def split_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
            if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
                raise TrainError(f"{where}: a 'messages' row does not end with an assistant answer after a prompt")
            return {"prompt": messages[:-1], "completion": messages[-1:]}

        removed = [c for c in ("messages", "prompt", "completion") if c in data.column_names]
        data = data.map(split_messages, input_columns="messages", remove_columns=removed)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    out = TrainData(data, folder, dataset_dir, split, total, notes=notes, run_dir=run_dir)
    record_provenance(out)
    return out


def _label_values(prob: float | None, margin: float | None) -> tuple[float | None, float | None]:
    """(probability, margin) of a pair from whichever of the two is known."""
    if prob is None and margin is not None:
        prob = (margin + 1) / 2
    if margin is None and prob is not None:
        margin = 2 * prob - 1
    return prob, margin


def read_labels(data: Dataset, where: str) -> tuple[list[float | None], list[float | None]]:
    """Each pair's judged probability and margin (None where the pair carries neither).

    Raises:
        TrainError: A probability outside [0, 1].
    """
    total = len(data)
    probs: list[float | None] = [None] * total
    margins: list[float | None] = [None] * total
    if PROB_COLUMN not in data.column_names and MARGIN_COLUMN not in data.column_names:
        return probs, margins
    raw_p = data[PROB_COLUMN] if PROB_COLUMN in data.column_names else [None] * total
    raw_m = data[MARGIN_COLUMN] if MARGIN_COLUMN in data.column_names else [None] * total
    for i, (p, m) in enumerate(zip(raw_p, raw_m, strict=True)):
        p, m = _label_values(p, m)
        if p is not None and not 0.0 <= p <= 1.0:
            raise TrainError(f"{where}: row {i}: {PROB_COLUMN} must be a probability in [0, 1], not {p}")
        probs[i], margins[i] = p, m
    return probs, margins


def resolve_mode(labels: str, judged: int, notes: list[str]) -> str:
    """The label mode in effect: ``auto`` is soft when some pair is judged; soft or weighted without any is hard."""
    if labels == "auto":
        return "soft" if judged else "hard"
    if labels in ("weighted", "soft") and not judged:
        notes.append(f"the pairs carry no judge probabilities ({PROB_COLUMN}): --labels {labels} trains on hard labels")
        return "hard"
    return labels


def kept_by_margin(
    margins: list[float | None], judged: int, min_margin: float, where: str, notes: list[str]
) -> list[int]:
    """Indices of the pairs ``--min-margin`` keeps (unjudged pairs stay); a note says what it dropped.

    Raises:
        TrainError: No pair reaches the margin.
    """
    keep = list(range(len(margins)))
    if min_margin <= 0:
        return keep
    if not judged:
        notes.append(f"--min-margin {min_margin} ignored: the pairs carry no judge margins")
        return keep
    keep = [i for i in keep if margins[i] is None or margins[i] >= min_margin]  # type: ignore[operator]
    if not keep:
        raise TrainError(f"{where}: no pair has a margin of at least {min_margin}; lower --min-margin")
    if len(keep) < len(margins):
        notes.append(f"{len(margins) - len(keep)} of {len(margins)} pairs dropped: judge margin below {min_margin}")
    return keep


def targets_and_weights(
    mode: str, probs: list[float | None], margins: list[float | None]
) -> tuple[list[float], list[float]]:
    """Per-pair target probability and loss weight for the ``soft`` or ``weighted`` mode (unjudged pairs: 1, 1)."""
    targets, weights = [], []
    for p, m in zip(probs, margins, strict=True):
        if mode == "soft":
            targets.append(1.0 if p is None else float(p))
            weights.append(1.0)
        else:
            targets.append(1.0)
            weights.append(1.0 if m is None else max(float(m), 0.0))
    return targets, weights


def preference_data(
    folder: Path,
    split: str | None = None,
    *,
    labels: str = "auto",
    min_margin: float = 0.0,
    limit: int | None = None,
) -> TrainData:
    """The preference pairs, filtered by margin and carrying per-pair targets for the label mode.

    Args:
        folder: Run folder or saved dataset folder.
        split: Split name (default ``preferences``).
        labels: ``auto``, ``hard``, ``weighted`` or ``soft`` (see the module docstring).
        min_margin: Drop judged pairs whose margin is below this.
        limit: Use only the first N pairs (after filtering).

    Raises:
        TrainError: Missing columns, an empty split, bad probabilities, or nothing left after filtering.
    """
    if labels not in LABEL_MODES:
        raise TrainError(f"unknown label mode {labels!r}: use one of {', '.join(LABEL_MODES)}")
    if not 0.0 <= min_margin <= 1.0:
        raise TrainError(f"--min-margin must lie in [0, 1] (margin = 2 * chosen_prob - 1), not {min_margin}")
    split = split or PREFERENCES_SPLIT
    notes: list[str] = []
    data, dataset_dir, run_dir = load_split(folder, split, PAIRS_EMPTY, notes)
    where = str(dataset_dir)
    missing = _missing(data, PREFERENCE_COLUMNS)
    if missing:
        raise TrainError(
            f"{where}: split {split!r} lacks column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(data.column_names)}); cai train dpo needs prompt/chosen/rejected, "
            "as `cai generate` writes them"
        )
    _check_nonempty(data, where, split, PAIRS_EMPTY)
    total = len(data)
    probs, margins = read_labels(data, where)
    judged = sum(p is not None for p in probs)
    mode = resolve_mode(labels, judged, notes)
    keep = kept_by_margin(margins, judged, min_margin, where, notes)
    dropped = total - len(keep)
    if dropped:
        data = data.select(keep)
    if limit is not None:
        keep = keep[:limit]
        data = data.select(range(min(limit, len(data))))
    if mode in ("weighted", "soft"):
        targets, weights = targets_and_weights(mode, [probs[i] for i in keep], [margins[i] for i in keep])
        data = data.add_column(TARGET_COLUMN, targets).add_column(WEIGHT_COLUMN, weights)
    out = TrainData(data, folder, dataset_dir, split, total, dropped, mode, notes, run_dir=run_dir)
    record_provenance(out)
    return out


__all__ = [
    "LABEL_MODES",
    "TARGET_COLUMN",
    "WEIGHT_COLUMN",
    "TrainData",
    "apply_reviews",
    "kept_by_margin",
    "load_split",
    "locate",
    "preference_data",
    "read_labels",
    "record_provenance",
    "resolve_mode",
    "sft_data",
    "targets_and_weights",
]
