"""``cai train sft|dpo|grpo|rloo|rm``: fine-tune a model with TRL on the data ``cai generate`` made.

Flags fill :class:`engine.train.TrainOptions`; those in :data:`TRL_FLAGS` set
fields of TRL's own config on top of the recipe (as ``--set KEY=VALUE`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from engine.train.options import Kind

from engine.cli.options import F, constitution_option, dtype_option, judge_model_option, out_option, seed_option, stack


@click.group()
def train() -> None:
    """Fine-tune a model with TRL on the data `cai generate` made.

    \b
    sft   supervised fine-tuning on the final (revised) answers: the `sft` split
    dpo   preference optimisation on the AI-labelled pairs: the `preferences` split
    grpo  online RLAIF: sampled completions rewarded by the judge or a preference model
    rloo  online RLAIF with a leave-one-out baseline (TRL's RLOOTrainer), the same rewards
    rm    a preference model (reward model) on the AI-labelled pairs

    Settings are TRL's own config fields, from a recipe (--config: a shipped
    name or a YAML file; `cai train recipes` lists them), with flags on top
    (--set KEY=VALUE for any field). The result is a plain model folder with a
    model card, which `cai generate --model OUT` takes directly.

    \b
        cai generate --out runs/demo --prompts mixed --limit 8 --revisions 1
        cai train sft --data runs/demo --out models/demo-sft --config sft-cpu-demo
        cai train dpo --data runs/demo --out models/demo-dpo --model models/demo-sft --config dpo-cpu-demo
        cai generate --model models/demo-dpo --out runs/after --prompts redteam --limit 8
    """


def _train_options(*, data_required: bool = True, data_help: str | None = None, many: bool = False) -> Callable[[F], F]:
    """Options shared by every `cai train` method (``many``: --data repeats)."""
    if data_help is None:
        data_help = "A `cai generate` output folder." + ("" if data_required else " Its final answers are references.")
    data_type = str if many else click.Path(path_type=Path)
    return stack(
        click.option("--data", required=data_required, multiple=many, type=data_type, help=data_help),
        out_option("Folder of the new model.", required=True, kind=click.Path(path_type=Path)),
        click.option("--model", default="default", show_default=True, help="Base model: default, a folder, a hub id."),
        click.option("--config", "recipe", metavar="RECIPE", help="Shipped recipe name or YAML file of TRL fields."),
        click.option("--max-steps", type=int, help="Stop after N optimizer steps (TRL max_steps)."),
        click.option("--epochs", type=float, help="Passes over the data (num_train_epochs)."),
        click.option("--learning-rate", "--lr", type=float, help="Peak learning rate."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Rows per device and step."),
        click.option("--grad-accum", type=click.IntRange(min=1), help="Gradient accumulation steps."),
        click.option("--max-length", type=click.IntRange(min=1), help="Most tokens per sequence."),
        seed_option("Seed of the run.", default=None),
        click.option("--logging-steps", type=float, help="Log every N steps."),
        click.option("--save-steps", type=float, help="Checkpoint every N steps (into OUT/checkpoints)."),
        click.option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            default=None,
            help="Recompute activations to save memory (TRL's default: on).",
        ),
        click.option(
            "--bf16/--no-bf16", default=None, help="bf16 mixed precision (default: where the hardware has it)."
        ),
        click.option("--report-to", help="tensorboard, wandb, trackio, all or none (default none)."),
        click.option("--lora/--no-lora", default=None, help="Train a LoRA adapter, merged at the end (needs peft)."),
        click.option("--lora-r", type=click.IntRange(min=1), help="LoRA rank (default 16)."),
        click.option("--lora-alpha", type=float, help="LoRA alpha (default 32)."),
        click.option("--split", help="Dataset split to train on (default: sft or preferences)."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N rows."),
        dtype_option,
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT/checkpoints."),
        click.option("--force", is_flag=True, help="Train again from the start into an OUT that holds a run."),
        click.option(
            "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any TRL config field (YAML value); repeatable."
        ),
    )


TRL_FLAGS = {
    "max_steps": "max_steps",
    "epochs": "num_train_epochs",
    "learning_rate": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "seed": "seed",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "gradient_checkpointing": "gradient_checkpointing",
    "bf16": "bf16",
    "report_to": "report_to",
    "beta": "beta",
    "eval_batch_size": "per_device_eval_batch_size",
}
"""Flags that set a field of TRL's config (flag's parameter -> field), over the recipe's value."""


def _run_train(kind: Kind, params: dict[str, Any]) -> None:
    """Turn a train command's flags into :class:`~engine.train.TrainOptions`, train, and report."""
    import yaml
    from pydantic import ValidationError

    from engine.cli.output import Interrupted
    from engine.errors import USAGE, UserError
    from engine.train import TrainOptions
    from engine.train import train as run_train
    from engine.train.methods import METHODS

    overrides: dict[str, Any] = {}
    for item in params.pop("sets"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set warmup_steps=10", exit_code=USAGE)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    flags: dict[str, str] = {}  # field name -> the flag that set it, for messages
    for flag, name in TRL_FLAGS.items():
        value = params.pop(flag, None)
        if value is not None:
            overrides[name] = int(value) if isinstance(value, float) and value.is_integer() else value
            flags[name] = "--" + flag.replace("_", "-")
    lora_overrides = {
        name: value
        for name, value in (("r", params.pop("lora_r")), ("lora_alpha", params.pop("lora_alpha")))
        if value is not None
    }
    try:
        options = TrainOptions(kind=kind, overrides=overrides, flags=flags, lora_overrides=lora_overrides, **params)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}", exit_code=USAGE) from None
    try:
        result = run_train(options)
    except KeyboardInterrupt:
        raise Interrupted(
            f"\ninterrupted: checkpoints so far are in {options.out / 'checkpoints'}; "
            "run the same command with --resume to continue"
        ) from None
    if not result.main_process:  # under `accelerate launch`, the main process reports
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    method = METHODS[kind]
    what, labels = method.unit, method.labels_note(result.data)
    processes = f" on {result.processes} processes ({result.distributed})" if result.processes > 1 else ""
    click.echo(
        f"\ntrained {kind} for {result.steps} steps on {result.data.rows} {what}{labels}{processes} "
        f"in {result.seconds:.0f} s, mean train loss {loss}"
    )
    click.echo(f"model: {result.out}  (card: {result.out / 'README.md'})")
    if kind == "rm":
        click.echo(str(result.evaluation.get("summary", "")))
        click.echo(f"use it: cai label RUN --judge-model rm:{result.out}   (or --reward-model rm:{result.out})")
        click.echo(f"check it: cai judge-eval --judge-model rm:{result.out}")
        return
    click.echo(f"use it: cai generate --model {result.out} --out runs/next")
    base = params.get("model") or "default"
    click.echo(f"evaluate it: cai eval --model {result.out} --baseline {base} --out runs/eval-{result.out.name}")


@train.command(name="sft")
@_train_options()
@click.option("--revised-only", is_flag=True, help="Only rows whose answer a revision changed.")
def train_sft(**params: Any) -> None:
    """Supervised fine-tuning on the final answers (the `sft` split), with TRL's SFTTrainer.

    Each row's conversation is the prompt and its final, revised answer the
    completion: the loss falls on the answer only. This is the supervised
    stage of constitutional AI, before preference training.

    \b
    Examples:
        cai train sft --data runs/demo --out models/demo-sft --config sft-cpu-demo
        cai train sft --data runs/demo --out models/sft --config sft-lora --set warmup_steps=20
    """
    _run_train("sft", params)


_label_options = stack(
    click.option(
        "--labels",
        type=click.Choice(["auto", "hard", "weighted", "soft"]),
        default="auto",
        show_default=True,
        help="How the judge's chosen_prob is used: ignored (hard), as a loss weight, or as the target.",
    ),
    click.option(
        "--min-margin",
        type=click.FloatRange(0, 1),
        default=0.0,
        show_default=True,
        help="Drop judged pairs whose margin (2 * chosen_prob - 1) is below this.",
    ),
)
"""``--labels`` and ``--min-margin``: how `dpo` and `rm` read the judge's soft labels."""


@train.command(name="dpo")
@_train_options()
@click.option("--beta", type=float, help="DPO temperature: how far the policy may move from the reference.")
@_label_options
def train_dpo(**params: Any) -> None:
    """Direct preference optimisation on the AI-labelled pairs (the `preferences` split), with TRL's DPOTrainer.

    When the judge labelled the pairs (columns chosen_prob and margin), the
    labels are soft by default: the judged probability is each pair's target
    in the sigmoid loss. --labels weighted weighs each pair's loss by its
    margin instead, --labels hard ignores the probabilities, and --min-margin
    drops pairs the judge was unsure about. Unjudged pairs count as hard labels.

    The reference model is a frozen copy of the base model (with --lora, the
    base model with the adapter switched off).

    \b
    Examples:
        cai train dpo --data runs/demo --out models/demo-dpo --config dpo-cpu-demo
        cai train dpo --data runs/big --out models/dpo --model models/sft --config dpo-lora --min-margin 0.3
        cai train dpo --data runs/big --out models/dpo --resume
    """
    _run_train("dpo", params)


_rl_options = stack(
    _train_options(data_required=False),
    click.option("-p", "--prompts", help="Prompt set: redteam, helpful, mixed, a file or hf:NAME (or give --data)."),
    constitution_option("Rules the judge rewards."),
    judge_model_option("Judge: default, a folder, a hub id.", default="default"),
    click.option(
        "--judge-principles", type=click.IntRange(min=1), default=1, show_default=True, help="Principles per prompt."
    ),
    click.option(
        "--reward",
        type=click.Choice(["auto", "group", "reference"]),
        default="auto",
        show_default=True,
        help="Judge each completion against its group's others, or against the reference answer (--data).",
    ),
    click.option(
        "--reward-model",
        "reward_models",
        multiple=True,
        metavar="SOURCE[=WEIGHT]",
        help=(
            "A reward source: judge (the constitutional judge, the default), rm:PATH (a `cai train rm` model) "
            "or over-refusal (-1 for refusing a prompt that should be answered). Repeat to add sources; "
            "each is weighted (default 1) and logged as rewards/<name>."
        ),
    ),
    click.option("--num-generations", type=click.IntRange(min=1), help="Completions per prompt (the group size)."),
    click.option("--max-completion-length", type=click.IntRange(min=1), help="Most new tokens per completion."),
)
"""What `cai train grpo` and `rloo` share: prompts, the judge, the reward sources, the group."""


def _run_rl(kind: Kind, params: dict[str, Any]) -> None:
    for flag in ("num_generations", "max_completion_length"):
        value = params.pop(flag)
        if value is not None:
            params["sets"] = (*params["sets"], f"{flag}={value}")
    params["reward_models"] = list(params["reward_models"])
    _run_train(kind, params)


@train.command(name="grpo")
@_rl_options
def train_grpo(**params: Any) -> None:
    """Online RLAIF: TRL's GRPOTrainer, rewarded by the constitutional judge or a preference model.

    For each prompt the policy samples a group of completions and each one's
    advantage is its reward against the group's. By default the reward is
    the judge's: it compares the group pairwise (both orders, under
    principles sampled from the constitution) and each completion's reward
    is its mean 2p - 1 over its comparisons. With --data RUN the prompts come
    from a `cai generate` run and each completion can instead be judged
    against the run's final revision (--reward reference). --reward-model
    rm:PATH rewards with a preference model from `cai train rm` instead (one
    forward pass per completion); sources add up with weights, and
    over-refusal=W penalises refusing prompts that should be answered. The
    judge and preference models are separate, frozen models.

    \b
    Examples:
        cai train grpo --prompts mixed --limit 32 --out models/grpo --config grpo-cpu-demo
        cai train grpo --data runs/demo --reward reference --out models/grpo --model models/demo-dpo
        cai train grpo --prompts mixed --reward-model rm:models/rm --reward-model over-refusal=0.5 --out models/g
    """
    _run_rl("grpo", params)


@train.command(name="rloo")
@_rl_options
def train_rloo(**params: Any) -> None:
    """Online RLAIF with TRL's RLOOTrainer: REINFORCE with a leave-one-out baseline.

    Like grpo (the same prompts, reward sources and flags), but each
    completion's advantage is its reward minus the mean reward of the other
    completions of its prompt. The classic path of the Constitutional AI
    paper is a preference model trained on AI labels, then RL against it:

    \b
    Examples:
        cai train rm --data runs/demo --out models/rm --config rm-cpu-demo
        cai train rloo --prompts mixed --limit 32 --reward-model rm:models/rm --out models/rloo --config rloo-cpu-demo
        cai train rloo --prompts mixed --reward-model rm:models/rm --reward-model over-refusal=0.5 --out models/r
    """
    _run_rl("rloo", params)


@train.command(name="rm")
@_train_options(
    many=True,
    data_help=(
        "Pairs: a `cai generate` run folder, a saved dataset, a JSONL file of TRL preference rows, or hf:NAME. "
        "Repeat to mix sources."
    ),
)
@_label_options
@click.option(
    "--heldout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Fraction of prompts held out to measure the model's accuracy (0: none).",
)
@click.option("--eval-batch-size", type=click.IntRange(min=1), help="Held-out pairs per device and pass.")
def train_rm(**params: Any) -> None:
    """Train a preference model (reward model) on the AI-labelled pairs, with TRL's RewardTrainer.

    A scalar head on the base model learns r(prompt, response) so that the
    chosen response scores higher: a Bradley-Terry loss whose target is the
    judge's chosen_prob (--labels soft, the default for judged pairs), so a
    pair the judge was 70% sure of is fitted to 70%. Pairs a person decided
    in `cai review` count as sure labels. --data repeats: runs, reviewed runs
    and any preference dataset in TRL's format mix into one training set. A
    held-out part of the prompts (--heldout) measures how often the trained
    model ranks pairs as labelled; the card and cai-train.json report it with
    a 95% interval.

    The result is a plain model folder; give it as rm:OUT wherever a judge or
    a reward is taken: cai label --judge-model rm:OUT, cai judge-eval
    --judge-model rm:OUT, cai train grpo --reward-model rm:OUT, cai generate
    --best-of 4 --reward-model rm:OUT.

    \b
    Examples:
        cai train rm --data runs/demo --out models/rm --config rm-cpu-demo
        cai train rm --data runs/a --data runs/b --data pairs.jsonl --out models/rm --labels hard
        cai train rm --data runs/big --out models/rm --config rm-lora --heldout 0.2
    """
    params["sources"] = list(params.pop("data"))
    _run_train("rm", params)


@train.command(name="recipes")
def train_recipes() -> None:
    """List the shipped recipes (use the name with --config, or copy the file and edit it).

    Also lists the shipped accelerate config files for several GPUs (`cai train accelerate-config NAME`).
    """
    from engine.train.recipes import accelerate_configs, builtin_recipes, recipe_summary

    for name, path in builtin_recipes().items():
        click.echo(f"{name:<16} {recipe_summary(path)}")
        click.secho(f"{'':<16} {path}", dim=True)
    click.echo("\naccelerate configs (accelerate launch --config_file $(cai train accelerate-config NAME) ...):")
    for name, path in accelerate_configs().items():
        click.echo(f"{name:<16} {recipe_summary(path)}")
        click.secho(f"{'':<16} {path}", dim=True)


@train.command(name="accelerate-config")
@click.argument("name")
def train_accelerate_config(name: str) -> None:
    """Print the path of a shipped accelerate config file: ddp, fsdp or zero3.

    \b
    Several GPUs, the same command under accelerate:
        accelerate launch --config_file $(cai train accelerate-config ddp) --num_processes 4 \\
            -m engine train dpo --data runs/big --out models/dpo --config dpo-lora
    """
    from engine.train.recipes import accelerate_config

    click.echo(accelerate_config(name))  # a name that is not shipped is a usage error (exit 2)
