"""Training recipes: YAML files of TRL's own config fields, and the shipped accelerate configs.

A recipe is a mapping whose keys are fields of the trainer's TRL config class
(``SFTConfig``, ``DPOConfig`` or ``GRPOConfig``, which extend transformers'
``TrainingArguments``), plus one optional section ``lora:`` whose keys are
fields of ``peft.LoraConfig``. This module finds and reads the files; the
keys are checked against the classes installed in :mod:`engine.train.fields`,
and :mod:`engine.train.settings` layers them with the flags into one config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constitution.errors import did_you_mean
from engine.config import ConfigError, read_config_file
from engine.errors import USAGE
from engine.train.errors import TrainError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
"""The shipped recipes (package data)."""

ACCELERATE_DIR = RECIPES_DIR / "accelerate"
"""The shipped ``accelerate launch --config_file`` files: ddp, fsdp, zero3 (package data)."""

LORA_KEY = "lora"
"""The recipe section that holds ``peft.LoraConfig`` fields; present means LoRA is on."""


@dataclass
class Recipe:
    """Settings read from a recipe file (or none), before flags are applied."""

    source: str
    """Builtin name, file path, or ``(none)``."""
    fields: dict[str, Any] = field(default_factory=dict)
    """TRL config fields, as written in the file."""
    lora: dict[str, Any] | None = None
    """``peft.LoraConfig`` fields from the ``lora:`` section, or None when the file has none."""
    text: str = ""
    """The file's text, kept for the model card."""


def builtin_recipes() -> dict[str, Path]:
    """The shipped recipes by name (file name without ``.yaml``)."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def accelerate_configs() -> dict[str, Path]:
    """The shipped accelerate config files by name (file name without ``.yaml``)."""
    return {p.stem: p for p in sorted(ACCELERATE_DIR.glob("*.yaml"))}


def accelerate_config(name: str) -> Path:
    """The absolute path of a shipped accelerate config file, for ``accelerate launch --config_file``.

    Raises:
        TrainError: No shipped config of that name (a usage error: exit code 2).
    """
    configs = accelerate_configs()
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    if stem not in configs:
        raise TrainError(
            f"{name}: no shipped accelerate config{did_you_mean(stem, configs)} (shipped: {', '.join(configs)})",
            exit_code=USAGE,
        )
    return configs[stem]


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe file (what it is for)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve_recipe(spec: str) -> Path:
    """A recipe file from a builtin name (``dpo-cpu-demo``) or a path.

    Raises:
        TrainError: Neither a file nor a builtin name.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    builtins = builtin_recipes()
    name = spec.removesuffix(".yaml").removesuffix(".yml")
    if name in builtins:
        return builtins[name]
    if path.exists():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise TrainError(f"{spec}: a recipe is a YAML file; this is {kind}")
    raise TrainError(
        f"{spec}: no such recipe file or builtin recipe{did_you_mean(name, builtins)} "
        f"(builtin: {', '.join(builtins)}; `cai train recipes` lists them)"
    )


def read_recipe(spec: str | None) -> Recipe:
    """Read a recipe file; ``None`` gives an empty recipe.

    Raises:
        TrainError: The file is missing, unreadable, not YAML or not a mapping.
    """
    if spec is None:
        return Recipe(source="(none)")
    path = resolve_recipe(spec)
    source = spec if path.parent == RECIPES_DIR and not Path(spec).is_file() else str(path)
    try:
        loaded = read_config_file(path)  # safe loader, no duplicate keys, UTF-8 text only
    except ConfigError as exc:
        raise TrainError(str(exc).replace("--config takes a YAML file", "a recipe is a YAML file")) from None
    text = path.read_text(encoding="utf-8-sig")
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise TrainError(f"{path}: a recipe is a mapping of TRL config field: value")
    fields = dict(loaded)
    lora = fields.pop(LORA_KEY, None)
    if lora is not None and not isinstance(lora, dict):
        raise TrainError(f"{path}: {LORA_KEY}: a mapping of peft.LoraConfig field: value (e.g. r: 16)")
    return Recipe(source=source, fields=fields, lora=lora, text=text)


__all__ = [
    "ACCELERATE_DIR",
    "LORA_KEY",
    "RECIPES_DIR",
    "Recipe",
    "accelerate_config",
    "accelerate_configs",
    "builtin_recipes",
    "read_recipe",
    "recipe_summary",
    "resolve_recipe",
]
