"""The output folder of a run: where checkpoints go, when a run may write there, and what it cleans up.

A run writes its model into ``--out`` and its checkpoints into
``OUT/checkpoints``. A folder that holds a model or files already is refused
unless ``--resume`` (continue from the last checkpoint) or ``--force`` (train
again from the start) says what to do with it; a run that failed before it
wrote anything leaves no empty folder behind that would block the next one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.train.errors import TrainError

CHECKPOINTS = "checkpoints"
"""Subfolder of ``--out`` where the trainer writes its checkpoints (``--resume`` reads them)."""


def check_out(out: Path, *, resume: bool, force: bool) -> str | None:
    """Check that a run may write to ``out``; the checkpoint to resume from, if any.

    Raises:
        TrainError: ``out`` is a file, or holds something and neither --resume nor --force was given.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if out.exists() and not out.is_dir():
        raise TrainError(f"{out}: exists and is not a folder")
    checkpoints = out / CHECKPOINTS
    if resume:
        return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None  # type: ignore[no-untyped-call]
    if out.is_dir() and not _holds_a_file(out):
        remove_empty(out / CHECKPOINTS)  # left by a run that failed before it wrote anything
    if out.is_dir() and any(out.iterdir()):
        if not force:
            what = "a trained model" if (out / "config.json").is_file() else "files"
            raise TrainError(
                f"{out}: holds {what} already; pass --resume to continue from its last checkpoint, "
                "--force to train again from the start, or choose another --out"
            )
        shutil.rmtree(checkpoints, ignore_errors=True)  # stale checkpoints would be resumed from later
    return None


def _holds_a_file(folder: Path) -> bool:
    """Whether ``folder`` holds any file, at any depth (empty subfolders do not count)."""
    return any(not p.is_dir() for p in folder.rglob("*"))


def remove_empty(folder: Path) -> None:
    """Remove ``folder`` when it holds no file at any depth."""
    if folder.is_dir() and not _holds_a_file(folder):
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["CHECKPOINTS", "check_out", "remove_empty"]
