"""One training run: check everything, load the model, train with TRL, save a plain model folder with a card.

The order is chosen so that bad input fails before anything slow happens: the
recipe and flags are checked first, then the output folder, then the data,
and only then is the model loaded.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.backends import first_line
from engine.train.data import TrainData, preference_data, sft_data
from engine.train.recipes import (
    Origins,
    Recipe,
    TrainError,
    build_config,
    check_length,
    config_fields,
    lora_config,
    read_recipe,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHECKPOINTS = "checkpoints"
"""Subfolder of ``--out`` where the trainer writes its checkpoints (``--resume`` reads them)."""
PROVENANCE = "cai-train.json"
"""Machine-readable record of the run, beside the model card."""

Kind = Literal["sft", "dpo", "grpo"]


class TrainOptions(BaseModel):
    """What one ``cai train sft|dpo|grpo`` run does; the CLI flags map onto these fields."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="sft (on the sft split), dpo (on the preferences split) or grpo (online).")
    data: Path | None = Field(
        default=None, description="A `cai generate` output folder, or a folder written by save_to_disk."
    )
    out: Path = Field(description="Folder of the trained model; checkpoints go to OUT/checkpoints.")
    model: str = Field(default="default", description="Base model: 'default', a model folder or a hub id.")
    recipe: str | None = Field(default=None, description="Builtin recipe name or YAML file of TRL config fields.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="TRL config fields set on the command line.")
    flags: dict[str, str] = Field(
        default_factory=dict, description="Which overrides a CLI flag set (field to --flag), to name it in messages."
    )
    lora: bool | None = Field(default=None, description="Train a LoRA adapter (merged at the end); None: the recipe.")
    lora_overrides: dict[str, Any] = Field(default_factory=dict, description="peft.LoraConfig fields from flags.")
    labels: Literal["auto", "hard", "weighted", "soft"] = Field(
        default="auto", description="DPO: how the judge's chosen_prob is used (see engine.train.data)."
    )
    min_margin: float = Field(default=0.0, ge=0, le=1, description="DPO: drop judged pairs below this margin.")
    split: str | None = Field(default=None, description="Dataset split (default: sft or preferences).")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N rows.")
    revised_only: bool = Field(default=False, description="SFT: only rows whose answer a revision changed.")
    resume: bool = Field(default=False, description="Continue from the last checkpoint in OUT/checkpoints.")
    force: bool = Field(default=False, description="Train again from the start into a folder that holds a run.")
    dtype: str = Field(default="auto", description="Weights: auto (fp32; LoRA base bf16 where fast) or a dtype.")
    prompts: str | None = Field(default=None, description="GRPO: prompt set (redteam, helpful, mixed, a file...).")
    constitution: str = Field(default="default", description="GRPO: the rules the judge rewards.")
    judge_model: str = Field(default="default", description="GRPO: the judge model (kept frozen).")
    judge_principles: int = Field(default=1, ge=1, description="GRPO: principles sampled per prompt and step.")
    reward: Literal["auto", "group", "reference"] = Field(
        default="auto", description="GRPO: judge against the group's other completions or a reference answer."
    )
    judge_batch_size: int = Field(default=16, ge=1, description="GRPO: judge requests per forward pass.")


@dataclass
class Plan:
    """Everything checked before the model loads."""

    recipe: Recipe
    config: Any
    """The TRL config object."""
    settings: dict[str, Any]
    peft_config: Any
    data: TrainData
    notes: list[str]
    constitution: Any = None
    """GRPO: the loaded constitution."""
    reward_mode: str | None = None
    """GRPO: group or reference."""


@dataclass
class TrainResult:
    """What a finished run reports."""

    out: Path
    kind: str
    steps: int
    train_loss: float | None
    seconds: float
    metrics: dict[str, float]
    """``Trainer.train()``'s metrics: train_runtime, train_steps_per_second, ..."""
    log_history: list[dict[str, Any]]
    data: TrainData
    settings: dict[str, Any]
    """The TRL config fields set explicitly (run defaults, recipe, flags)."""
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)
    processes: int = 1
    """How many processes trained (``accelerate launch --num_processes``)."""
    distributed: str = "NO"
    """accelerate's distributed type: NO, MULTI_GPU, MULTI_CPU, FSDP, DEEPSPEED."""
    main_process: bool = True
    """Whether this process is the main one (the one that wrote the card and reports)."""

    @property
    def num_tokens(self) -> float | None:
        """Tokens seen in training, as TRL counts them (None when it did not log any)."""
        counts = [h["num_tokens"] for h in self.log_history if "num_tokens" in h]
        return float(counts[-1]) if counts else None


def resolve_model(spec: str) -> tuple[str, str]:
    """(what ``from_pretrained`` gets, the name recorded) for ``default``, a folder or a hub id.

    Raises:
        TrainError: The folder is missing or holds no model, or the default model is not installed.
    """
    from engine.backends import BackendError

    try:
        if spec == "default":
            from engine.backends.default_model import DEFAULT_MODEL_NAME, default_model_path

            return str(default_model_path()), DEFAULT_MODEL_NAME
        from engine.backends import locate_model

        source = locate_model(spec.removeprefix("hf:"))
    except BackendError as exc:
        raise TrainError(str(exc)) from None
    return source, spec.removeprefix("hf:")


def load_model(source: str, name: str, dtype: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer for training.

    Raises:
        TrainError: Either cannot be loaded, or the tokenizer has no chat template.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise TrainError(f"{name}: cannot load the tokenizer: {first_line(exc)}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise TrainError(f"{name}: the tokenizer has no chat template; cai datasets are chats: use a chat model")
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except Exception as exc:
        raise TrainError(f"{name}: cannot load the model: {first_line(exc)}") from None
    return model, tokenizer


def _config_classes(kind: str) -> tuple[type, type]:
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.sft_config import SFTConfig

    return {"sft": (SFTConfig, DPOConfig), "dpo": (DPOConfig, SFTConfig), "grpo": (GRPOConfig, DPOConfig)}[kind]


def run_defaults(checkpoints: Path) -> dict[str, Any]:
    """What ``cai train`` sets for every run before the recipe: checkpoint folder, no reporting, precision."""
    import torch

    from engine.backends.hf import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    defaults: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "report_to": "none",
        "bf16": resolve_dtype("auto", device) == torch.bfloat16,
    }
    if device.type == "cpu":
        defaults["use_cpu"] = True
    return defaults


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
        _remove_empty(out / CHECKPOINTS)  # left by a run that failed before it wrote anything
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


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` when it holds no file at any depth."""
    if folder.is_dir() and not _holds_a_file(folder):
        shutil.rmtree(folder, ignore_errors=True)


def prepare(options: TrainOptions) -> Plan:
    """Everything that can be checked without loading the model.

    Raises:
        TrainError: Bad recipe, flags, output folder, data or constitution.
    """
    notes: list[str] = []
    recipe = read_recipe(options.recipe)
    overrides = dict(options.overrides)
    for source in (recipe.fields, overrides):
        if "output_dir" in source:
            source.pop("output_dir")
            notes.append("output_dir ignored: checkpoints go to OUT/checkpoints (set --out)")
    use_lora = options.lora if options.lora is not None else recipe.lora is not None
    _check_sharding(options.kind, use_lora, {**recipe.fields, **overrides})
    config_class, other = _config_classes(options.kind)
    checkpoints = options.out / CHECKPOINTS
    config, settings = build_config(
        config_class, recipe, overrides, run_defaults(checkpoints), other, flags=options.flags
    )
    _check_reporting(config.report_to)
    peft_config = lora_config(recipe.lora, options.lora_overrides, recipe.source) if use_lora else None
    origins = Origins.of(recipe, overrides, options.flags, config_fields(config_class))
    if options.kind == "grpo":
        data, rules, mode = _grpo_inputs(options, config)
        check_length(config, data.rows, origins, repeats=int(config.num_generations))
        return Plan(recipe, config, settings, peft_config, data, notes + data.notes, rules, mode)
    if options.data is None:
        raise TrainError(f"cai train {options.kind} needs --data: a `cai generate` output folder")
    if options.kind == "sft":
        data = sft_data(options.data, options.split, revised_only=options.revised_only, limit=options.limit)
    else:
        data = preference_data(
            options.data, options.split, labels=options.labels, min_margin=options.min_margin, limit=options.limit
        )
    check_length(config, data.rows, origins)
    return Plan(recipe, config, settings, peft_config, data, notes + data.notes)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _zero_stage(config: Any) -> int | None:
    """The ZeRO stage of a DeepSpeed config (a dict or a JSON file), None when it says none or cannot be read."""
    if isinstance(config, str | Path):
        try:
            config = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, int) else None


def sharding(fields: dict[str, Any] | None = None) -> str | None:
    """The parameter sharding this process was launched with: ``FSDP``, ``DeepSpeed ZeRO-3`` or None.

    ``accelerate launch`` passes its config file on as environment variables;
    the TRL fields ``fsdp`` and ``deepspeed`` (recipe or ``--set``) ask for the same.
    """
    fields = fields or {}
    if _env_flag("ACCELERATE_USE_FSDP") or fields.get("fsdp"):
        return "FSDP"
    stage: int | None = None
    if fields.get("deepspeed"):
        stage = _zero_stage(fields["deepspeed"])
    elif _env_flag("ACCELERATE_USE_DEEPSPEED"):
        env_stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        if env_stage.strip().isdigit():
            stage = int(env_stage)
        elif os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            stage = _zero_stage(os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"])
    return "DeepSpeed ZeRO-3" if stage == 3 else None


def _check_sharding(kind: str, lora: bool, fields: dict[str, Any]) -> None:
    """Refuse what cannot work on sharded weights, before anything loads.

    Raises:
        TrainError: LoRA (its merge needs whole weights) or GRPO under ZeRO-3 (the judge would be partitioned).
    """
    mode = sharding(fields)
    if mode is None:
        return
    if lora:
        raise TrainError(
            f"--lora under {mode}: the adapter is merged into the weights at the end, and {mode} holds them sharded "
            "over the processes; train LoRA with the ddp config (only the adapter trains, so DDP fits wherever the "
            f"base model fits one GPU), or fine-tune fully (--no-lora) under {mode}"
        )
    if kind == "grpo" and mode == "DeepSpeed ZeRO-3":
        raise TrainError(
            "cai train grpo under DeepSpeed ZeRO-3: the judge is a separate model that ZeRO-3 would partition "
            "as it loads; use the ddp or fsdp config for grpo"
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


def _grpo_inputs(options: TrainOptions, config: Any) -> tuple[TrainData, Any, str]:
    """The prompts, the constitution and the reward mode of a GRPO run."""
    from constitution import ConstitutionError, load
    from engine.train.grpo import REFERENCE_COLUMN, grpo_data

    try:
        rules = load(options.constitution)
    except ConstitutionError as exc:
        raise TrainError("\n".join(str(p) for p in exc.problems)) from None
    data = grpo_data(options.prompts, options.data, limit=options.limit)
    has_reference = REFERENCE_COLUMN in data.dataset.column_names
    mode = options.reward if options.reward != "auto" else ("reference" if has_reference else "group")
    if mode == "reference" and not has_reference:
        raise TrainError(
            "--reward reference needs reference answers: give --data RUN (its final revisions are the references)"
        )
    if mode == "group" and config.num_generations < 2:
        raise TrainError("--reward group compares completions of one prompt: num_generations must be at least 2")
    data.constitution = {"id": rules.id, "version": rules.version, "hash": rules.content_hash}
    data.labels = mode
    return data, rules, mode


def _model_dtype(options: TrainOptions, lora: bool) -> Any:
    import torch

    from engine.backends.hf import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if options.dtype != "auto":
        try:
            return resolve_dtype(options.dtype, device)
        except Exception as exc:
            raise TrainError(str(exc)) from None
    # Full fine-tuning keeps fp32 master weights (bf16 runs as autocast); a frozen LoRA base can be bf16.
    return resolve_dtype("auto", device) if lora else torch.float32


def make_trainer(options: TrainOptions, plan: Plan, callbacks: list[Any] | None = None) -> tuple[Any, str]:
    """Load the model (and, for GRPO, the judge) and build the TRL trainer for this run.

    Returns:
        The trainer and the model's recorded name.

    Raises:
        TrainError: A model cannot be loaded, or TRL refuses the combination of settings.
    """
    source, name = resolve_model(options.model)
    reward: Any = _reward(options, plan) if options.kind == "grpo" else None
    model, tokenizer = load_model(source, name, _model_dtype(options, plan.peft_config is not None))
    common = {
        "model": model,
        "args": plan.config,
        "train_dataset": plan.data.dataset,
        "processing_class": tokenizer,
        "peft_config": plan.peft_config,
        "callbacks": callbacks,
    }
    trainer: Any
    try:
        if options.kind == "sft":
            from trl.trainer.sft_trainer import SFTTrainer

            trainer = SFTTrainer(**common)
        elif options.kind == "dpo":
            from engine.train.soft_dpo import SoftLabelDPOTrainer

            trainer = SoftLabelDPOTrainer(**common)
        else:
            from trl.trainer.grpo_trainer import GRPOTrainer

            trainer = GRPOTrainer(reward_funcs=[reward], **common)
    except TrainError:
        raise
    except (ValueError, ImportError, NotImplementedError) as exc:  # TRL's and transformers' refusals of settings
        raise TrainError(f"the trainer refused the settings: {first_line(exc)}") from None
    return trainer, name


def _reward(options: TrainOptions, plan: Plan) -> Any:
    """The constitutional judge as a GRPO reward function, on its own frozen copy of the judge model."""
    from engine.backends import BackendError, load_backend
    from engine.feedback import Judge
    from engine.train.grpo import ConstitutionalReward

    try:
        backend = load_backend(options.judge_model, batch_size=options.judge_batch_size)
    except BackendError as exc:
        raise TrainError(f"judge model: {exc}") from None
    return ConstitutionalReward(
        Judge(backend, constitution=plan.constitution),
        plan.constitution,
        principles=options.judge_principles,
        mode="reference" if plan.reward_mode == "reference" else "group",
        seed=plan.config.seed,
    )


def stored_dtype(source: str) -> Any:
    """The dtype a model's checkpoint declares (its ``config.json``), None when it says none or cannot be read."""
    import torch
    from transformers import AutoConfig

    try:
        dtype = AutoConfig.from_pretrained(source).dtype
    except Exception:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def merge_lora(model: Any) -> Any:
    """Merge a trained LoRA adapter into its base model, at the precision the base model is stored in.

    A frozen LoRA base may train in bf16 (where the hardware computes it
    natively) although its checkpoint holds fp32; merging into those weights
    would save every weight training never touched (embeddings, output head,
    norms) rounded to bf16. So when the base trained in another dtype than
    its checkpoint's, the base is loaded again at its own precision and the
    adapter is merged into that copy: the untouched weights are saved
    exactly as the base model holds them. That copy costs one more load of
    the base model (in CPU memory), once, at the end.
    """
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    name = model.active_adapter
    peft_config = model.peft_config[name]
    source = peft_config.base_model_name_or_path
    trained = next(
        (p.dtype for n, p in model.get_base_model().named_parameters() if "lora_" not in n and p.is_floating_point()),
        None,
    )
    stored = stored_dtype(source) if source else None
    if not source or (stored is not None and stored == trained):
        return model.merge_and_unload()
    state = {k: v.detach().to("cpu") for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
    try:
        base = AutoModelForCausalLM.from_pretrained(source, dtype=stored if stored is not None else "auto")
    except Exception as exc:
        raise TrainError(
            f"{source}: cannot load the base model again to merge the adapter: {first_line(exc)}"
        ) from None
    fresh = get_peft_model(base, copy.deepcopy(peft_config), adapter_name=name)
    set_peft_model_state_dict(fresh, state, adapter_name=name)
    with torch.no_grad():
        return fresh.merge_and_unload()


def save_model(trainer: Any, out: Path) -> None:
    """Save a plain model folder (a LoRA adapter is merged into the weights, see :func:`merge_lora`) with its tokenizer.

    Every process calls this: under FSDP and ZeRO-3 ``trainer.save_model``
    gathers the sharded weights (a collective), and the main process writes.
    """
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model: whole weights on every process (sharding was refused)
        if accelerator.is_main_process:
            merged = merge_lora(model)
            merged.config.use_cache = True
            merged.save_pretrained(str(out))
            trainer.processing_class.save_pretrained(str(out))
    else:
        model.config.use_cache = True
        trainer.save_model(str(out))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (out / "training_args.bin").unlink(missing_ok=True)  # lives in the checkpoints; the model folder stays plain


def train(options: TrainOptions, *, callbacks: list[Any] | None = None) -> TrainResult:
    """Run ``cai train sft|dpo|grpo``: check, train with TRL, save a plain model folder with a model card.

    Args:
        options: What to train on, from what, into where, with which recipe.
        callbacks: Extra ``transformers.TrainerCallback`` objects.

    Raises:
        TrainError: Bad input, or a model that cannot be loaded; the message says what to do.
    """
    from engine.train.card import write_card

    plan = prepare(options)
    recipe, settings, data, notes = plan.recipe, plan.settings, plan.data, plan.notes
    resume_from = check_out(options.out, resume=options.resume, force=options.force)
    if options.resume and resume_from is None:
        notes.append(f"no checkpoint in {options.out / CHECKPOINTS}: training from the start")
    existed = options.out.exists()
    _wait_for_everyone()  # no process may write into OUT before every process has checked it
    try:
        trainer, name = make_trainer(options, plan, callbacks)
        start = time.perf_counter()
        output = _start_training(trainer, resume_from)
    except BaseException:
        # a run that failed before its first checkpoint leaves no empty OUT/checkpoints to block the next run
        _remove_empty(options.out / CHECKPOINTS)
        if not existed:
            _remove_empty(options.out)
        raise
    seconds = time.perf_counter() - start
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
        processes=int(trainer.accelerator.num_processes),
        distributed=str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)),
        main_process=bool(trainer.accelerator.is_main_process),
    )
    save_model(trainer, options.out)
    if result.main_process:
        write_card(options, result, recipe, name)
        (options.out / PROVENANCE).write_text(
            json.dumps(_provenance(options, result, recipe, name), indent=2, default=str) + "\n", encoding="utf-8"
        )
        constitution = data.run_dir / "constitution.yaml" if data.run_dir else None
        if constitution is not None and constitution.is_file():
            shutil.copyfile(constitution, options.out / "constitution.yaml")
        _remove_empty(options.out / CHECKPOINTS)  # save_strategy "no": nothing to resume from
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


def _wait_for_everyone() -> None:
    """A barrier over the processes of an ``accelerate launch`` run; nothing when there is one process."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _lora_dict(peft_config: Any) -> dict[str, Any]:
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules")
    out: dict[str, Any] = {}
    for k in keys:
        value = getattr(peft_config, k, None)
        out[k] = sorted(value) if isinstance(value, set) else value
    return out


def _provenance(options: TrainOptions, result: TrainResult, recipe: Recipe, name: str) -> dict[str, Any]:
    import torch
    import transformers
    import trl

    data = result.data
    return {
        "kind": options.kind,
        "base_model": name,
        "data": data.source,
        "split": data.split,
        "rows": data.rows,
        "rows_in_split": data.total,
        "dropped_below_margin": data.dropped,
        "labels": data.labels if options.kind == "dpo" else None,
        "min_margin": options.min_margin if options.kind == "dpo" else None,
        "judge": {
            "model": options.judge_model,
            "principles": options.judge_principles,
            "reward": data.labels,
        }
        if options.kind == "grpo"
        else None,
        "constitution": data.constitution,
        "constitution_hashes": data.constitution_hashes,
        "recipe": recipe.source,
        "settings": result.settings,
        "steps": result.steps,
        "train_loss": result.train_loss,
        "seconds": round(result.seconds, 1),
        "resumed_from": result.resumed_from,
        "processes": result.processes,
        "distributed": result.distributed,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }


__all__ = [
    "CHECKPOINTS",
    "PROVENANCE",
    "Plan",
    "TrainOptions",
    "TrainResult",
    "make_trainer",
    "prepare",
    "sharding",
    "train",
]
