"""Limits on TRL values that TRL and transformers check only once training starts (or never), and the run's length.

:func:`check_values` runs when the config is built
(:func:`engine.train.settings.build_config`), :func:`check_length` once the
number of training rows is known; both before the model loads, and every
message names where the value was set (:class:`engine.train.fields.Origins`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.backends.base import first_line
from engine.train.errors import TrainError
from engine.train.fields import Origins, config_fields


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


__all__ = ["MAX_STEPS", "RULES", "check_length", "check_values"]
