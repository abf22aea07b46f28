"""The settings an evaluation folder's stored answers depend on (``eval.json``), checked on every resume.

A folder holds the answers of one set of settings. Rerunning with the same
settings resumes; other settings are refused unless ``--force`` is given, and
then the old answers are moved aside into ``old.N/``, never mixed or lost.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from constitution import Constitution
from engine.config import EvalConfig
from engine.evaluate.answers import (
    ANSWERS_DIR,
    JUDGE_SYCOPHANCY_FILE,
    PAIRWISE_DIR,
    ROBUSTNESS_FILE,
    SETTINGS_FILE,
    SYCOPHANCY_DIR,
)
from engine.evaluate.report import HTML_FILE, REPORT_FILE
from engine.rundir import RunDirError

__all__ = ["check_settings", "move_aside", "settings_key"]

_STORED_WITH = (
    "redteam",
    "benign",
    "limit",
    "judge",
    "judge_model",
    "judge_principles",
    "jailbreaks",
    "counterfactual",
    "max_new_tokens",
    "temperature",
    "seed",
    "classifier",
)
"""The settings stored answers depend on."""


def settings_key(config: EvalConfig, rules: Constitution) -> dict[str, Any]:
    """The settings stored answers depend on (a resumed evaluation must match them), as written to ``eval.json``."""
    values = config.model_dump(mode="json", include=set(_STORED_WITH))
    values["constitution_hash"] = rules.content_hash
    return values


def check_settings(config: EvalConfig, rules: Constitution) -> dict[str, Any]:
    """Check that ``config.out`` may hold this evaluation; return the settings to write.

    Raises:
        RunDirError: The folder holds an evaluation with other settings (and no
            ``--force``), is not a folder, or is a non-empty folder that holds
            no evaluation.
    """
    path = config.out / SETTINGS_FILE
    wanted = settings_key(config, rules)
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if before != wanted and not config.force:
            diffs = (
                ["eval.json is unreadable"]
                if not isinstance(before, dict)
                else [f"{k}: {before.get(k)!r} -> {wanted.get(k)!r}" for k in wanted if before.get(k) != wanted.get(k)]
            )
            raise RunDirError(
                f"{config.out} holds an evaluation made with other settings:\n  "
                + "\n  ".join(diffs)
                + "\nUse another --out, or --force to discard the stored answers and start again."
            )
    elif config.out.exists() and not config.out.is_dir():
        raise RunDirError(f"{config.out}: exists and is not a folder")
    elif config.out.exists() and any(config.out.iterdir()) and not config.force:
        raise RunDirError(f"{config.out}: folder is not empty and holds no evaluation; choose another --out or --force")
    return wanted


def move_aside(config: EvalConfig, settings: dict[str, Any]) -> None:
    """--force with other settings: move the stored answers into ``old.N/``, so nothing is mixed (or lost)."""
    folder = config.out
    try:
        same = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8")) == settings
    except (OSError, ValueError):
        same = False
    kept = (
        ANSWERS_DIR,
        PAIRWISE_DIR,
        ROBUSTNESS_FILE,
        SYCOPHANCY_DIR,
        JUDGE_SYCOPHANCY_FILE,
        SETTINGS_FILE,
        REPORT_FILE,
        HTML_FILE,
    )
    if same or not any((folder / name).exists() for name in kept):  # nothing to keep (a new folder, say)
        return
    n = 1
    while (folder / f"old.{n}").exists():
        n += 1
    old = folder / f"old.{n}"
    old.mkdir()
    for name in kept:
        if (folder / name).exists():
            shutil.move(str(folder / name), str(old / name))
