"""Prompt sets from ``datasets``: a ``save_to_disk`` folder (``PATH[:SPLIT]``) or a hub dataset (``hf:NAME[:SPLIT]``).

``datasets`` is imported only when such a set is loaded, so importing
:mod:`engine.sources` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from constitution.errors import did_you_mean
from engine.sources.files import FILE_SUFFIXES
from engine.sources.items import PromptSetError, type_name
from engine.sources.readers import Streamed
from engine.sources.rows import Row


def load_saved(path: Path, split: str | None, source: str) -> Streamed:
    """A reader of a ``save_to_disk`` folder's split (``None``: ``train``, or the folder's one dataset).

    Raises:
        PromptSetError: Not a saved dataset, or no such split.
    """
    from datasets import load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise PromptSetError(
            f"not a dataset folder saved with datasets' save_to_disk; prompt files are {', '.join(FILE_SUFFIXES)}",
            file=source if split is None else source[: -len(split) - 1],
        ) from exc
    dataset = _pick_split(loaded, split, source)
    return Streamed(lambda: _dataset_rows(dataset), source, stem=path.resolve().name, source=source)


def load_hub(source: str) -> Streamed:
    """A reader of a hub dataset named ``hf:NAME[:SPLIT]`` (split ``train`` by default).

    Raises:
        PromptSetError: No name, or the dataset or split cannot be loaded (offline, unknown...).
    """
    spec = source.removeprefix("hf:")
    name, _, split = spec.partition(":")
    if not name:
        raise PromptSetError("expected hf:NAME[:SPLIT], e.g. hf:Anthropic/hh-rlhf:test", file=source)
    split = split or "train"
    from datasets import load_dataset

    try:
        loaded = load_dataset(name, split=split)
    except Exception as exc:  # network, missing dataset, unknown split: all reported the same way
        raise PromptSetError(f"could not load the hub dataset: {type(exc).__name__}: {exc}", file=source) from exc
    label = f"hf:{name}:{split}"
    dataset = _pick_split(loaded, split, label)
    return Streamed(lambda: _dataset_rows(dataset), label, stem=name.rstrip("/").rsplit("/", 1)[-1], source=label)


def _pick_split(loaded: Any, split: str | None, where: str) -> Any:
    from datasets import Dataset, DatasetDict

    if isinstance(loaded, DatasetDict):
        return _split_of(loaded, split or "train", where)
    if isinstance(loaded, Dataset):
        # load_dataset has already taken the split; a save_to_disk folder of one Dataset has none.
        if split is not None and not where.startswith("hf:"):
            raise PromptSetError(f"this folder holds a single dataset without splits; drop ':{split}'", file=where)
        return loaded
    raise PromptSetError(f"expected a Dataset or DatasetDict, got {type_name(loaded)}", file=where)


def _split_of(loaded: Any, split: str, where: str) -> Any:
    if split not in loaded:
        splits = list(loaded)
        raise PromptSetError(
            f"no split {split!r}{did_you_mean(split, splits)} (splits: {', '.join(splits) or 'none'}; "
            "choose one with :SPLIT after the name)",
            file=where,
        )
    return loaded[split]


def _dataset_rows(dataset: Any, batch_size: int = 1000) -> Iterator[Row]:
    number = 0
    # Batches: iterating a Dataset row by row costs tens of microseconds a row.
    for batch in dataset.with_format(None).iter(batch_size=batch_size):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            number += 1
            yield Row(dict(zip(columns, values, strict=True)), row=number)
