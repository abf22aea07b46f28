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
import enum
import math
import types
import typing
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constitution.errors import did_you_mean
from engine.backends import first_line
from engine.config import ConfigError, read_config_file

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
    if isinstance(value, str):  # YAML 1.1 reads 1e12 as a string, too
        try:
            value = float(value) if not value.strip().lstrip("-").isdigit() else int(value)
        except ValueError:
            raise bad from None
    if isinstance(value, float) and value.is_integer():
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
        raise _refusal(config_class, settings, origins, exc) from None
    check_values(config, origins)
    return config, settings


@dataclass
class Origins:
    """Where each explicitly set TRL field came from: the recipe file, a flag, or ``--set``."""

    recipe: str
    from_recipe: set[str]
    from_command_line: set[str]
    flags: dict[str, str]
    """Field name to the CLI flag that set it (``per_device_train_batch_size`` to ``--batch-size``)."""

    @classmethod
    def of(
        cls, recipe: Recipe, overrides: dict[str, Any], flags: dict[str, str] | None, known: Collection[str]
    ) -> Origins:
        """The origins of a recipe's and the command line's fields, under the names the config class uses."""

        def name(key: str) -> str:
            key = key.replace("-", "_")
            return _RENAMED[key] if key in _RENAMED and _RENAMED[key] in known else key

        return cls(
            recipe.source,
            {name(k) for k in recipe.fields},
            {name(k) for k in overrides},
            {name(k): flag for k, flag in (flags or {}).items()},
        )

    @property
    def explicit(self) -> list[str]:
        """The fields a person set, recipe first."""
        return sorted(self.from_recipe - self.from_command_line) + sorted(self.from_command_line)

    def where(self, key: str) -> str:
        """Where ``key`` was set: the recipe file, the flag, ``command line`` (``--set``), or ``default``."""
        if key in self.from_command_line:
            return self.flags.get(key, "command line")
        if key in self.from_recipe:
            return self.recipe
        return "default"

    def fix(self, key: str) -> str:
        """What to change to fix ``key``."""
        if key in self.from_command_line:
            flag = self.flags.get(key)
            return f"give {flag} another value" if flag else f"change --set {key}=... on the command line"
        if key in self.from_recipe:
            return f"change {key} in {self.recipe} (or override it: --set {key}=...)"
        return f"set {key} in the recipe or with --set {key}=..."


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


@dataclass(frozen=True)
class _Rule:
    """A limit on one TRL field that TRL itself checks only once training starts (or never)."""

    test: Callable[[Any], bool]
    must: str
    """What the value must be, for the message."""
    meaning: str = ""
    """What the field does, for the message."""


def _whole(least: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _at_least(least: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= least


def _above(least: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > least


def _fraction(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


_POSITIVE_INT = "a whole number of at least 1"
_SHARE = "below 1: a share of the steps"
RULES: dict[str, _Rule] = {
    "per_device_train_batch_size": _Rule(_whole(1), _POSITIVE_INT, "rows per device and step"),
    "per_device_eval_batch_size": _Rule(_whole(1), _POSITIVE_INT, "rows per device in evaluation"),
    "gradient_accumulation_steps": _Rule(_whole(1), _POSITIVE_INT, "batches per optimizer step"),
    "max_steps": _Rule(lambda v: _whole(1)(v) or v == -1, "-1 (train for num_train_epochs) or at least 1"),
    "num_train_epochs": _Rule(_at_least(0), "a number of at least 0", "passes over the data"),
    "learning_rate": _Rule(_at_least(0), "a number of at least 0", "the peak learning rate"),
    "weight_decay": _Rule(_at_least(0), "a number of at least 0"),
    "adam_epsilon": _Rule(_at_least(0), "a number of at least 0"),
    "adam_beta1": _Rule(_fraction, "at least 0 and below 1"),
    "adam_beta2": _Rule(_fraction, "at least 0 and below 1"),
    "max_grad_norm": _Rule(_at_least(0), "a number of at least 0", "0 turns gradient clipping off"),
    "warmup_steps": _Rule(_at_least(0), "a number of at least 0", _SHARE),
    "logging_steps": _Rule(_at_least(0), "a number of at least 0", _SHARE),
    "save_steps": _Rule(_at_least(0), "a number of at least 0", _SHARE),
    "eval_steps": _Rule(lambda v: v is None or _at_least(0)(v), "a number of at least 0", _SHARE),
    "dataloader_num_workers": _Rule(_whole(0), "a whole number of at least 0", "0 loads data in the main process"),
    "seed": _Rule(lambda v: _whole(0)(v) and v < 2**32, "a whole number from 0 to 2**32 - 1"),
    "data_seed": _Rule(lambda v: v is None or (_whole(0)(v) and v < 2**32), "a whole number from 0 to 2**32 - 1"),
    "max_length": _Rule(lambda v: v is None or _whole(1)(v), _POSITIVE_INT, "most tokens per sequence"),
    "max_prompt_length": _Rule(lambda v: v is None or _whole(1)(v), _POSITIVE_INT, "most prompt tokens"),
    "max_completion_length": _Rule(lambda v: v is None or _whole(1)(v), _POSITIVE_INT, "most completion tokens"),
    "temperature": _Rule(_above(0), "a number above 0", "the sampling temperature"),
    "top_p": _Rule(lambda v: _above(0)(v) and v <= 1, "above 0 and at most 1"),
}
"""Limits TRL and transformers check only once the model is loaded and training starts, or never."""

_BETA = {
    "DPOConfig": _Rule(_above(0), "a number above 0", "how far the policy may move from the reference"),
    "GRPOConfig": _Rule(_at_least(0), "a number of at least 0", "the KL penalty; 0 turns it off"),
}


def check_values(config: Any, origins: Origins) -> None:
    """Check the values TRL and transformers accept at construction but refuse (or misuse) once training starts.

    Every float a person set must be finite; the fields of :data:`RULES` must
    be in range; and the optimizer and the learning-rate scheduler are built
    once on a dummy parameter, so that torch's and transformers' own checks
    of their settings run now, not after the model has loaded.

    Raises:
        TrainError: One line per bad value, naming where it was set and what to do.
    """
    problems: list[str] = []
    known = config_fields(type(config))
    explicit = set(origins.explicit)
    rules = dict(RULES)
    if type(config).__name__ in _BETA:
        rules["beta"] = _BETA[type(config).__name__]
    for key in known:
        value = getattr(config, key, None)
        rule = rules.get(key)
        if rule is not None and not rule.test(value):
            meaning = f" ({rule.meaning})" if rule.meaning else ""
            problems.append(
                f"{origins.where(key)}: {key} must be {rule.must}{meaning}, got {value!r}; {origins.fix(key)}"
            )
        elif key in explicit and isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{origins.where(key)}: {key} must be a finite number, got {value!r}; {origins.fix(key)}")
    if problems:
        raise TrainError("\n".join(problems))
    _check_optimizer(config, origins)


def _plain(value: Any) -> Any:
    """An enum's value (``OptimizerNames.SGD`` is ``'sgd'``), anything else itself."""
    return value.value if isinstance(value, enum.Enum) else value


def _check_optimizer(config: Any, origins: Origins) -> None:
    """Build the optimizer and the scheduler once on a dummy parameter, so torch and transformers check them now.

    The trainer builds both only after the model has loaded; their checks
    (learning rate, betas, epsilon, scheduler arguments, a missing optimizer
    package) are the same here.
    """
    import torch
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    optim = str(_plain(config.optim))

    def named(*keys: str) -> str:
        chosen = [k for k in origins.explicit if k in keys or (k.startswith("adam_") and "adam" in optim)]
        return ", ".join(f"{origins.where(k)}: {k}={_plain(getattr(config, k))!r}" for k in chosen) or "the defaults"

    try:
        optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(config)
    except ImportError as exc:
        raise TrainError(f"{named('optim')}: {first_line(exc)}") from None
    except Exception:  # needs the model (GaLore, LOMO...): the trainer checks it when it builds it
        return
    dummy = [{"params": [torch.nn.Parameter(torch.zeros(1))], "weight_decay": config.weight_decay}]
    try:
        optimizer = optimizer_class(dummy, **kwargs)
    except (ValueError, TypeError) as exc:
        where = named("optim", "optim_args", "learning_rate", "weight_decay")
        raise TrainError(f"the optimizer {optim} refused {where}: {first_line(exc)}; change them") from None
    try:
        get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=config.get_warmup_steps(100),
            num_training_steps=100,
            scheduler_specific_kwargs=config.lr_scheduler_kwargs or {},
        )
    except (ValueError, TypeError) as exc:
        where = named("lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps")
        raise TrainError(f"the learning-rate scheduler refused {where}: {first_line(exc)}; change them") from None


MAX_STEPS = 10**9
"""More optimizer steps than any run takes: a recipe asking for more holds a typo (``num_train_epochs: 1e23``)."""


def check_length(config: Any, rows: int, origins: Origins, *, repeats: int = 1) -> int:
    """The optimizer steps a run will take on ``rows`` rows; refuse zero and absurd numbers before the model loads.

    Args:
        config: The TRL config.
        rows: Training rows (prompts for GRPO).
        origins: Where the settings came from.
        repeats: Completions trained per row (GRPO's ``num_generations``).

    Raises:
        TrainError: The run would take no step, or more than :data:`MAX_STEPS`.
    """
    steps: float
    if config.max_steps > 0:
        steps = config.max_steps
        key = "max_steps"
    else:
        batches = math.ceil(rows * repeats / config.per_device_train_batch_size)
        per_epoch = max(batches // config.gradient_accumulation_steps, 1) if batches else 0
        steps = math.ceil(config.num_train_epochs * per_epoch)
        key = "num_train_epochs"
    value = getattr(config, key)
    shown = f"{value:.3g}" if abs(value) >= 1e6 else repr(value)
    if steps > MAX_STEPS:
        raise TrainError(
            f"{origins.where(key)}: {key}={shown} means about {steps:.3g} optimizer steps on {rows} rows, "
            f"more than any run takes (the limit is {MAX_STEPS:.0e}); {origins.fix(key)}"
            + ("" if key == "max_steps" else ", or cap the run with max_steps")
        )
    if steps < 1:
        raise TrainError(
            f"{origins.where(key)}: {key}={shown} gives no optimizer step on {rows} rows; {origins.fix(key)}"
        )
    return int(steps)


__all__ = [
    "ACCELERATE_DIR",
    "DEFAULT_LORA",
    "LORA_KEY",
    "MAX_STEPS",
    "RECIPES_DIR",
    "RULES",
    "Origins",
    "Recipe",
    "TrainError",
    "accelerate_config",
    "accelerate_configs",
    "build_config",
    "builtin_recipes",
    "check_fields",
    "check_length",
    "check_values",
    "lora_config",
    "read_recipe",
    "resolve_recipe",
]
