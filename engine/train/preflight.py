"""Everything a run checks before the model loads: :func:`prepare` turns :class:`TrainOptions` into a :class:`Plan`.

The order is chosen so that bad input fails before anything slow happens: the
recipe file is read, then what the sharding rules out is refused, then the
recipe and the flags are checked key by key and value by value (the optimizer
and scheduler included), then the data is read and the run's length on it
checked. :func:`engine.train.run.train` then checks the output folder, and
only then does the model load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.train.checkpoints import CHECKPOINTS
from engine.train.distributed import check_sharding
from engine.train.errors import TrainError
from engine.train.fields import Origins, config_fields
from engine.train.limits import check_length
from engine.train.methods import METHODS
from engine.train.options import Plan, TrainOptions
from engine.train.recipes import read_recipe
from engine.train.settings import build_config, lora_config


def run_defaults(checkpoints: Path) -> dict[str, Any]:
    """What ``cai train`` sets for every run before the recipe: checkpoint folder, no reporting, precision."""
    import torch

    from engine.backends.torch_device import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    defaults: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "report_to": "none",
        "bf16": resolve_dtype("auto", device) == torch.bfloat16,
    }
    if device.type == "cpu":
        defaults["use_cpu"] = True
    return defaults


def prepare(options: TrainOptions) -> Plan:
    """Everything that can be checked without loading the model.

    Raises:
        TrainError: Bad recipe, flags, output folder, data or constitution.
    """
    method = METHODS[options.kind]
    notes: list[str] = []
    recipe = read_recipe(options.recipe)
    overrides = dict(options.overrides)
    for source in (recipe.fields, overrides):
        if "output_dir" in source:
            source.pop("output_dir")
            notes.append("output_dir ignored: checkpoints go to OUT/checkpoints (set --out)")
    use_lora = options.lora if options.lora is not None else recipe.lora is not None
    check_sharding(method, use_lora, {**recipe.fields, **overrides})
    config_class = method.config_class()
    checkpoints = options.out / CHECKPOINTS
    config, settings = build_config(
        config_class,
        recipe,
        overrides,
        run_defaults(checkpoints),
        method.near_config_class(),
        flags=options.flags,
    )
    _check_reporting(config.report_to)
    lora_overrides = dict(options.lora_overrides)
    if method.head == "reward":  # peft then trains and saves the new reward head in full beside the adapter
        lora_overrides["task_type"] = "SEQ_CLS"
    peft_config = lora_config(recipe.lora, lora_overrides, recipe.source) if use_lora else None
    origins = Origins.of(recipe, overrides, options.flags, config_fields(config_class))
    inputs = method.inputs(options, config)
    data = inputs.data
    check_length(config, data.rows, origins, repeats=method.group_size(config))
    return Plan(
        recipe, config, settings, peft_config, data, notes + data.notes, inputs.constitution, inputs.reward_mode
    )


def _check_reporting(report_to: Any) -> None:
    """Refuse a ``report_to`` integration that is not installed (transformers would fail later, with a traceback)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    wanted = [report_to] if isinstance(report_to, str) else list(report_to or [])
    wanted = [w for w in wanted if w not in ("none", "all")]
    unknown = [w for w in wanted if w not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise TrainError(f"report_to: unknown {', '.join(unknown)}; use one of {', '.join(INTEGRATION_TO_CALLBACK)}")
    available = set(get_available_reporting_integrations())  # type: ignore[no-untyped-call]
    missing = [w for w in wanted if w not in available]
    if missing:
        raise TrainError(f"report_to {', '.join(missing)}: not installed; pip install {' '.join(missing)}")


__all__ = ["prepare", "run_defaults"]
