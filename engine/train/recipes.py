"""Training recipes: YAML files of TRL's own config fields, with flags on top.

A recipe is a mapping whose keys are fields of the trainer's TRL config class
(``SFTConfig`` or ``DPOConfig``, which extend transformers'
``TrainingArguments``), plus one optional section ``lora:`` whose keys are
fields of ``peft.LoraConfig``. Nothing is copied from those classes: the keys
are checked against the classes installed, so a recipe always matches the TRL
release in use, and a typo is an error that names the key and the closest
field.

Values are layered, later ones winning: TRL's defaults, then what ``cai
train`` sets for every run (checkpoint folder, no reporting unless asked,
bf16 only where the hardware computes it natively), then the recipe, then the
command line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from constitution.errors import did_you_mean

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
"""The shipped recipes (package data)."""

ACCELERATE_DIR = RECIPES_DIR / "accelerate"
"""The shipped ``accelerate launch --config_file`` files: ddp, fsdp, zero3 (package data)."""

LORA_KEY = "lora"
"""The recipe section that holds ``peft.LoraConfig`` fields; present means LoRA is on."""

DEFAULT_LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "task_type": "CAUSAL_LM",
}
"""LoRA settings used by ``--lora`` when the recipe has no ``lora:`` section."""

# transformers 5 renamed gradient checkpointing; the old names still work but warn on every run.
_RENAMED = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


class TrainError(Exception):
    """Training cannot start or go on as asked; the message says why and what to do."""


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
        TrainError: No shipped config of that name.
    """
    configs = accelerate_configs()
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    if stem not in configs:
        raise TrainError(
            f"{name}: no shipped accelerate config{did_you_mean(stem, configs)} (shipped: {', '.join(configs)})"
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
        raise TrainError(f"{spec}: a recipe is a YAML file, not a folder")
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
        text = path.read_text(encoding="utf-8")
        loaded = yaml.safe_load(text)
    except OSError as exc:
        raise TrainError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TrainError(f"{path}: YAML error: {exc}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise TrainError(f"{path}: a recipe is a mapping of TRL config field: value")
    fields = dict(loaded)
    lora = fields.pop(LORA_KEY, None)
    if lora is not None and not isinstance(lora, dict):
        raise TrainError(f"{path}: {LORA_KEY}: a mapping of peft.LoraConfig field: value (e.g. r: 16)")
    return Recipe(source=source, fields=fields, lora=lora, text=text)


def config_fields(config_class: type) -> dict[str, dataclasses.Field[Any]]:
    """The settable fields of a TRL config dataclass."""
    return {f.name: f for f in dataclasses.fields(config_class) if f.init}


def _plain_type(annotation: object) -> type | None:
    """``float`` for ``float`` or ``float | None``; None for anything richer."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _plain_type(args[0]) if len(args) == 1 else None
    return annotation if annotation in (bool, int, float, str) else None


def coerce(name: str, value: Any, annotation: object, where: str) -> Any:
    """Check a value against a simple field type, converting what YAML reads loosely.

    YAML 1.1 reads ``1e-5`` as a string, so numeric strings become floats.

    Raises:
        TrainError: The value cannot be of the field's type.
    """
    kind = _plain_type(annotation)
    options = typing.get_args(annotation) or (annotation,)
    if isinstance(value, bool) and bool not in options and str in options:
        return "no" if not value else "yes"  # YAML 1.1 reads `save_strategy: no` as False
    if value is None or kind is None or kind is str:
        return value
    bad = TrainError(f"{where}: {name}: expected {kind.__name__}, got {value!r}")
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    if kind is float:
        if isinstance(value, int | float):
            return value  # an int stays an int: fields such as warmup_steps read 5 and 0.1 differently
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if not isinstance(value, int):
        raise bad
    return value


def check_fields(values: dict[str, Any], config_class: type, where: str, other: type | None = None) -> dict[str, Any]:
    """Validate keys (unknown ones are errors with a suggestion) and simple value types.

    Args:
        values: Field name to value.
        config_class: The TRL config class the keys must belong to.
        where: Named in messages (the recipe file, or ``command line``).
        other: The other trainer's config class, to say when a key belongs there.

    Raises:
        TrainError: One line per unknown key or bad value.
    """
    known = config_fields(config_class)
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            hint = did_you_mean(name, known)
            if not hint and other is not None and name in config_fields(other):
                hint = f"; it is a {other.__name__} field: is this recipe meant for another `cai train` command?"
            problems.append(f"{where}: unknown {config_class.__name__} field {name!r}{hint}")
            continue
        try:
            out[name] = coerce(name, value, known[name].type, where)
        except TrainError as exc:
            problems.append(str(exc))
    if problems:
        raise TrainError("\n".join(problems))
    return out


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
) -> tuple[Any, dict[str, Any]]:
    """Layer run defaults, the recipe and the flags into one TRL config object.

    Returns:
        The config, and the settings that were set explicitly (defaults, recipe
        and flags merged; what the model card records).

    Raises:
        TrainError: Unknown keys, bad values, or a combination TRL refuses.
    """
    from_recipe = check_fields(recipe.fields, config_class, recipe.source, other)
    from_flags = check_fields(overrides, config_class, "command line", other)
    known = config_fields(config_class)
    settings = {**run_defaults, **from_recipe, **from_flags}
    for old, new in _RENAMED.items():
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
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "" if recipe.source == "(none)" else f"{recipe.source} + flags: "
        raise TrainError(f"{where}{config_class.__name__} refused the settings: {text}") from None
    return config, settings


__all__ = [
    "ACCELERATE_DIR",
    "DEFAULT_LORA",
    "LORA_KEY",
    "RECIPES_DIR",
    "Recipe",
    "TrainError",
    "accelerate_config",
    "accelerate_configs",
    "build_config",
    "builtin_recipes",
    "check_fields",
    "lora_config",
    "read_recipe",
    "resolve_recipe",
]
