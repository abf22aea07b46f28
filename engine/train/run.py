"""One training run: check everything, load the model, train with TRL, save a plain model folder with a card.

:func:`train` is ``cai train sft|dpo|grpo``. The order is chosen so that bad
input fails before anything slow happens: :func:`engine.train.preflight.prepare`
checks the recipe, the flags and the data, then the output folder is checked
(:mod:`engine.train.checkpoints`), and only then does the model load
(:func:`make_trainer`). What differs between the methods comes from
:data:`engine.train.methods.METHODS`.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from engine.backends.base import first_line
from engine.train.card import write_card
from engine.train.checkpoints import CHECKPOINTS, check_out, remove_empty
from engine.train.distributed import wait_for_everyone
from engine.train.errors import TrainError
from engine.train.methods import METHODS
from engine.train.model import load_model, model_dtype, resolve_model, save_model
from engine.train.options import Plan, TrainOptions, TrainResult
from engine.train.preflight import prepare
from engine.train.recipes import Recipe

PROVENANCE = "cai-train.json"
"""Machine-readable record of the run, beside the model card."""


def make_trainer(options: TrainOptions, plan: Plan, callbacks: list[Any] | None = None) -> tuple[Any, str]:
    """Load the model (and, for GRPO, the judge) and build the TRL trainer for this run.

    Returns:
        The trainer and the model's recorded name.

    Raises:
        TrainError: A model cannot be loaded, or TRL refuses the combination of settings.
    """
    method = METHODS[options.kind]
    source, name = resolve_model(options.model)
    arguments = method.trainer_arguments(options, plan)  # GRPO's judge loads before the policy
    if method.head == "reward":
        from transformers import set_seed

        set_seed(int(plan.config.seed))  # the new reward head's initial weights follow the run's seed
    model, tokenizer = load_model(
        source, name, model_dtype(options.dtype, plan.peft_config is not None), reward_head=method.head == "reward"
    )
    common = {
        "model": model,
        "args": plan.config,
        "train_dataset": plan.data.dataset,
        "processing_class": tokenizer,
        "peft_config": plan.peft_config,
        "callbacks": callbacks,
    }
    try:
        trainer = method.trainer_class()(**common, **arguments)
    except TrainError:
        raise
    except (ValueError, ImportError, NotImplementedError) as exc:  # TRL's and transformers' refusals of settings
        raise TrainError(f"the trainer refused the settings: {first_line(exc)}") from None
    return trainer, name


def train(options: TrainOptions, *, callbacks: list[Any] | None = None) -> TrainResult:
    """Run ``cai train sft|dpo|grpo|rm``: check, train with TRL, save a plain model folder with a model card.

    Args:
        options: What to train on, from what, into where, with which recipe.
        callbacks: Extra ``transformers.TrainerCallback`` objects.

    Raises:
        TrainError: Bad input, or a model that cannot be loaded; the message says what to do.
    """
    plan = prepare(options)
    recipe, settings, data, notes = plan.recipe, plan.settings, plan.data, plan.notes
    resume_from = check_out(options.out, resume=options.resume, force=options.force)
    if options.resume and resume_from is None:
        notes.append(f"no checkpoint in {options.out / CHECKPOINTS}: training from the start")
    existed = options.out.exists()
    wait_for_everyone()  # no process may write into OUT before every process has checked it
    try:
        trainer, name = make_trainer(options, plan, callbacks)
        start = time.perf_counter()
        output = _start_training(trainer, resume_from)
    except BaseException:
        # a run that failed before its first checkpoint leaves no empty OUT/checkpoints to block the next run
        remove_empty(options.out / CHECKPOINTS)
        if not existed:
            remove_empty(options.out)
        raise
    seconds = time.perf_counter() - start
    evaluation, measured_notes = METHODS[options.kind].measure(trainer, data)
    notes.extend(measured_notes)
    options.out.mkdir(parents=True, exist_ok=True)
    if plan.peft_config is not None:
        settings = {**settings, "lora": _lora_dict(plan.peft_config)}
    result = TrainResult(
        out=options.out,
        kind=options.kind,
        steps=int(output.global_step),
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        seconds=seconds,
        metrics={k: float(v) for k, v in (output.metrics or {}).items() if isinstance(v, int | float)},
        log_history=list(trainer.state.log_history),
        data=data,
        settings=settings,
        resumed_from=resume_from,
        notes=notes,
        evaluation=evaluation,
        processes=int(trainer.accelerator.num_processes),
        distributed=str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)),
        main_process=bool(trainer.accelerator.is_main_process),
    )
    save_model(trainer, options.out)
    if result.main_process:
        write_card(options, result, recipe, name)
        (options.out / PROVENANCE).write_text(
            json.dumps(provenance(options, result, recipe, name), indent=2, default=str) + "\n", encoding="utf-8"
        )
        constitution = data.run_dir / "constitution.yaml" if data.run_dir else None
        if constitution is not None and constitution.is_file():
            shutil.copyfile(constitution, options.out / "constitution.yaml")
        remove_empty(options.out / CHECKPOINTS)  # save_strategy "no": nothing to resume from
    return result


def _start_training(trainer: Any, resume_from: str | None) -> Any:
    """``trainer.train()``; a refusal of the settings before the first step is a TrainError, not a traceback."""
    try:
        return trainer.train(resume_from_checkpoint=resume_from)
    except ValueError as exc:
        if trainer.state.global_step > 0:
            raise
        raise TrainError(
            f"training stopped before its first step: {first_line(exc)}; check the recipe's and the flags' values"
        ) from None


def _lora_dict(peft_config: Any) -> dict[str, Any]:
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules")
    out: dict[str, Any] = {}
    for k in keys:
        value = getattr(peft_config, k, None)
        out[k] = sorted(value) if isinstance(value, set) else value
    return out


def provenance(options: TrainOptions, result: TrainResult, recipe: Recipe, name: str) -> dict[str, Any]:
    """What ``cai-train.json`` holds: the model card's facts as JSON, with the library versions."""
    import torch
    import transformers
    import trl

    data = result.data
    record: dict[str, Any] = {
        "kind": options.kind,
        "base_model": name,
        "data": data.source,
        "split": data.split,
        "rows": data.rows,
        "rows_in_split": data.total,
        "dropped_below_margin": data.dropped,
        "labels": None,
        "min_margin": None,
        "judge": None,
    }
    record.update(METHODS[options.kind].provenance(options, data))
    return record | {
        "constitution": data.constitution,
        "constitution_hashes": data.constitution_hashes,
        "recipe": recipe.source,
        "settings": result.settings,
        "steps": result.steps,
        "train_loss": result.train_loss,
        "seconds": round(result.seconds, 1),
        "resumed_from": result.resumed_from,
        "evaluation": result.evaluation or None,
        "processes": result.processes,
        "distributed": result.distributed,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }


__all__ = ["PROVENANCE", "make_trainer", "provenance", "train"]
