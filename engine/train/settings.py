"""One TRL config from layers: TRL's defaults, what ``cai train`` sets for every run, the recipe, the flags.

Later layers win: TRL's defaults, then the run defaults (checkpoint folder, no
reporting unless asked, bf16 only where the hardware computes it natively,
see :func:`engine.train.preflight.run_defaults`), then the recipe, then the
command line. The result is checked field by field
(:mod:`engine.train.fields`) and value by value (:mod:`engine.train.limits`).
The LoRA section of a recipe becomes a ``peft.LoraConfig`` the same way.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from engine.train.errors import TrainError
from engine.train.fields import RENAMED, Origins, check_fields, config_fields
from engine.train.limits import check_values
from engine.train.recipes import LORA_KEY, Recipe

DEFAULT_LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "task_type": "CAUSAL_LM",
}
"""LoRA settings used by ``--lora`` when the recipe has no ``lora:`` section."""


def lora_config(values: dict[str, Any] | None, overrides: dict[str, Any], where: str) -> Any:
    """A ``peft.LoraConfig`` from a recipe's ``lora:`` section (or the defaults) and flags.

    Raises:
        TrainError: peft is missing, or a key is unknown or a value is invalid.
    """
    try:
        from peft import LoraConfig
    except ImportError:
        raise TrainError("LoRA needs the peft package: pip install 'cai-engine[lora]' (or pip install peft)") from None
    merged = {**DEFAULT_LORA, **(values or {}), **overrides}
    checked = check_fields(merged, LoraConfig, f"{where}: {LORA_KEY}")
    try:
        return LoraConfig(**checked)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"{where}: {LORA_KEY}: {exc}") from None


def build_config(
    config_class: type,
    recipe: Recipe,
    overrides: dict[str, Any],
    run_defaults: dict[str, Any],
    other: type | None = None,
    flags: dict[str, str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Layer run defaults, the recipe and the flags into one TRL config object, and check its values.

    Args:
        config_class: SFTConfig, DPOConfig or GRPOConfig.
        recipe: The recipe read from its file.
        overrides: Fields set on the command line (``--set`` and flags).
        run_defaults: What ``cai train`` sets for every run.
        other: The other trainer's config class, to say when a key belongs there.
        flags: Which override a CLI flag set (field name to ``--flag``), for messages.

    Returns:
        The config, and the settings that were set explicitly (defaults, recipe
        and flags merged; what the model card records).

    Raises:
        TrainError: Unknown keys, bad values, or a combination TRL refuses;
            each line names where the value came from and the key.
    """
    from_recipe = check_fields(recipe.fields, config_class, recipe.source, other)
    from_flags = check_fields(overrides, config_class, "command line", other)
    known = config_fields(config_class)
    settings = {**run_defaults, **from_recipe, **from_flags}
    origins = Origins.of(recipe, overrides, flags, known)
    for old, new in RENAMED.items():
        if new not in known:
            continue
        if old in settings:
            settings[new] = settings.pop(old)
        elif new not in settings and old in known:  # keep TRL's default, under the name that does not warn
            default = known[old].default
            if default is not dataclasses.MISSING and default is not None:
                settings[new] = default
    if settings.get("fp16") and "bf16" not in {**from_recipe, **from_flags}:
        settings["bf16"] = False  # fp16 asked for: drop the automatic bf16
    try:
        config = config_class(**settings)
    except (TypeError, ValueError) as exc:
        raise _refusal(config_class, settings, origins, exc) from None
    check_values(config, origins)
    return config, settings


def _refusal(config_class: type, settings: dict[str, Any], origins: Origins, exc: Exception) -> TrainError:
    """TRL's or transformers' refusal of the settings, naming the fields without which it would have been accepted."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name = config_class.__name__
    culprits: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in origins.explicit:
            trial = {k: v for k, v in settings.items() if k != key}
            try:
                config_class(**trial)
            except (TypeError, ValueError):
                continue
            culprits.append(key)
    if not culprits:
        where = "" if origins.recipe == "(none)" else f"{origins.recipe} + flags: "
        return TrainError(f"{where}{name} refused the settings: {text}")
    return TrainError(
        "\n".join(
            f"{origins.where(key)}: {key}={settings[key]!r}: {name} refused the settings: {text}; {origins.fix(key)}"
            for key in culprits
        )
    )


__all__ = ["DEFAULT_LORA", "build_config", "lora_config"]
