"""The training methods of ``cai train`` as one table: :data:`METHODS`, ``sft``, ``dpo``, ``grpo``, ``rloo`` and ``rm``.

Each :class:`Method` holds everything that differs between them: TRL's
config class and trainer, the data it trains on, what one training row is
called, and what the model card and ``cai-train.json`` say about it. Code
that works for every method looks its method up here instead of asking
which one it is::

    method = METHODS[options.kind]
    config_class = method.config_class()   # trl's SFTConfig, DPOConfig, GRPOConfig or RewardConfig

TRL's classes are named as ``module:Class`` and imported only when a run
needs them, so looking a method up stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from engine.train.data import preference_data, sft_data
from engine.train.errors import TrainError
from engine.train.grpo import REFERENCE_COLUMN, ConstitutionalReward, RewardMode, grpo_data

if TYPE_CHECKING:
    from pathlib import Path

    from engine.train.data import TrainData
    from engine.train.options import Kind, Plan, TrainOptions


@dataclass(frozen=True)
class Inputs:
    """What a method trains on, read and checked before the model loads."""

    data: TrainData
    constitution: Any = None
    """GRPO: the rules the judge rewards."""
    reward_mode: str | None = None
    """GRPO: ``group`` or ``reference``."""


def _one(config: Any) -> int:
    return 1


def _no_trainer_arguments(options: TrainOptions, plan: Plan) -> dict[str, Any]:
    return {}


def _no_details(options: TrainOptions, data: TrainData) -> str:
    return ""


def _no_provenance(options: TrainOptions, data: TrainData) -> dict[str, Any]:
    return {}


def _nothing_measured(trainer: Any, data: TrainData) -> tuple[dict[str, Any], list[str]]:
    return {}, []


def _load(path: str) -> Any:
    """The object a ``module:name`` path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    """One way to train: what ``cai train NAME`` uses and how the run describes itself."""

    name: Kind
    config: str
    """TRL's config class, as ``module:Class``."""
    trainer: str
    """The trainer class, as ``module:Class``."""
    near: Kind
    """The method a recipe key that this config lacks most likely belongs to (named in the hint)."""
    unit: str
    """What one training row is (``rows``, ``pairs``, ``prompts``), in messages and the card."""
    summary: str
    """What the method does, in one line of the model card."""
    inputs: Callable[[TrainOptions, Any], Inputs]
    """Reads the training data (and anything else the run needs besides the model) for the options and config."""
    labels_are: str | None = None
    """What ``TrainData.labels`` is for this method (``labels``, ``reward``), None when it means nothing."""
    group_size: Callable[[Any], int] = _one
    """Completions trained per row, from the config (GRPO's ``num_generations``)."""
    loads_a_judge: bool = False
    """Whether a second model, the judge, is loaded beside the one that trains."""
    trainer_arguments: Callable[[TrainOptions, Plan], dict[str, Any]] = _no_trainer_arguments
    """Arguments of the trainer besides model, config, data and tokenizer; built before the model loads."""
    card_details: Callable[[TrainOptions, TrainData], str] = _no_details
    """Appended to :attr:`summary` in the card: the labels, the judge, the filters in effect."""
    provenance: Callable[[TrainOptions, TrainData], dict[str, Any]] = _no_provenance
    """The method's entries of ``cai-train.json`` (``labels``, ``min_margin``, ``judge``)."""
    head: Literal["causal", "reward"] = "causal"
    """What is trained: the causal LM itself, or a scalar reward head on it (a preference model)."""
    measure: Callable[[Any, TrainData], tuple[dict[str, Any], list[str]]] = _nothing_measured
    """After training: what the method measures (``cai-train.json``'s ``evaluation``) and notes for the user."""

    def config_class(self) -> type:
        """TRL's config class of this method (imports trl)."""
        config_class: type = _load(self.config)
        return config_class

    def near_config_class(self) -> type:
        """The config class of :attr:`near`, to say when a recipe key belongs there."""
        return METHODS[self.near].config_class()

    def trainer_class(self) -> Any:
        """The trainer class of this method (imports trl)."""
        return _load(self.trainer)

    def labels_note(self, data: TrainData) -> str:
        """``, soft labels`` (DPO), ``, group reward`` (GRPO) or nothing, for the line that reports a run."""
        return f", {data.labels} {self.labels_are}" if self.labels_are else ""


# ----------------------------------------------------------------------------- sft and dpo: a run's dataset


def _data_folder(options: TrainOptions) -> Path:
    if options.data is None:
        raise TrainError(f"cai train {options.kind} needs --data: a `cai generate` output folder")
    return options.data


def _sft_inputs(options: TrainOptions, config: Any) -> Inputs:
    folder = _data_folder(options)
    return Inputs(sft_data(folder, options.split, revised_only=options.revised_only, limit=options.limit))


def _dpo_inputs(options: TrainOptions, config: Any) -> Inputs:
    folder = _data_folder(options)
    return Inputs(
        preference_data(
            folder, options.split, labels=options.labels, min_margin=options.min_margin, limit=options.limit
        )
    )


_LABELS = {
    "hard": "hard labels: every pair counts fully",
    "weighted": "each pair's loss weighted by the judge's margin (2 * chosen_prob - 1)",
    "soft": "soft labels: the judge's chosen_prob is the target of the sigmoid loss",
}


def _dpo_details(options: TrainOptions, data: TrainData) -> str:
    details = f"; {_LABELS.get(data.labels, data.labels)}"
    if options.min_margin > 0:
        details += f"; pairs with a judge margin below {options.min_margin} dropped ({data.dropped})"
    return details


def _dpo_provenance(options: TrainOptions, data: TrainData) -> dict[str, Any]:
    return {"labels": data.labels, "min_margin": options.min_margin}


# ----------------------------------------------------------------------------- grpo and rloo: prompts and rewards


def _rl_inputs(options: TrainOptions, config: Any) -> Inputs:
    """The prompts, the constitution, the judge's reward mode and the weighted reward sources of an RL run."""
    from constitution import ConstitutionError, load
    from engine.train.rewards import ANSWERABLE, JUDGE, KIND_COLUMN, OVER_REFUSAL, parse_sources

    sources = parse_sources(options.reward_models)
    specs = [s.spec for s in sources]
    if getattr(config, "reward_weights", None) is not None:
        raise TrainError("reward_weights: set each source's weight with --reward-model SOURCE=WEIGHT instead")
    config.reward_weights = [s.weight for s in sources]
    try:
        rules = load(options.constitution)
    except ConstitutionError as exc:
        raise TrainError("\n".join(str(p) for p in exc.problems)) from None
    data = grpo_data(options.prompts, options.data, limit=options.limit)
    has_reference = REFERENCE_COLUMN in data.dataset.column_names
    mode = options.reward if options.reward != "auto" else ("reference" if has_reference else "group")
    if JUDGE in specs:
        if mode == "reference" and not has_reference:
            raise TrainError(
                "--reward reference needs reference answers: give --data RUN (its final revisions are the references)"
            )
        if mode == "group" and config.num_generations < 2:
            raise TrainError("--reward group compares completions of one prompt: num_generations must be at least 2")
    if OVER_REFUSAL in specs:
        kinds = data.dataset[KIND_COLUMN] if KIND_COLUMN in data.dataset.column_names else []
        watched = sum(k in ANSWERABLE for k in kinds)
        if not watched:
            raise TrainError(
                "--reward-model over-refusal watches prompts that should be answered (kind benign or near_miss), "
                "and these prompts have none: use --prompts mixed or helpful, or a prompt file with a kind column"
            )
        data.notes.append(f"over-refusal penalty: {watched} of {data.rows} prompts should be answered")
    data.constitution = {"id": rules.id, "version": rules.version, "hash": rules.content_hash}
    data.labels = mode if JUDGE in specs else "+".join(s.name for s in sources)
    return Inputs(data, rules, mode)


def _grpo_group_size(config: Any) -> int:
    return int(config.num_generations)


def _rl_rewards(options: TrainOptions, plan: Plan) -> dict[str, Any]:
    """The reward functions, in the order of ``--reward-model`` (``reward_weights`` follow it); frozen models."""
    from engine.backends import load_backend
    from engine.backends.base import BackendError
    from engine.backends.reward_model import load_reward_model
    from engine.judge import Judge
    from engine.train.rewards import JUDGE, OVER_REFUSAL, OverRefusalPenalty, PreferenceModelReward, parse_sources

    functions: list[Any] = []
    for source in parse_sources(options.reward_models):
        try:
            if source.spec == JUDGE:
                backend = load_backend(options.judge_model, batch_size=options.judge_batch_size)
                judge = Judge(backend, constitution=plan.constitution)
                mode: RewardMode = "reference" if plan.reward_mode == "reference" else "group"
                functions.append(
                    ConstitutionalReward(
                        judge, plan.constitution, principles=options.judge_principles, mode=mode, seed=plan.config.seed
                    )
                )
            elif source.spec == OVER_REFUSAL:
                functions.append(OverRefusalPenalty())
            else:
                functions.append(
                    PreferenceModelReward(load_reward_model(source.spec, batch_size=options.judge_batch_size))
                )
        except BackendError as exc:
            raise TrainError(f"judge model: {exc}" if source.spec == JUDGE else f"--reward-model {exc}") from None
    return {"reward_funcs": functions}


_REWARDS = {
    "group": "each completion judged against the other completions of its prompt",
    "reference": "each completion judged against the reference answer",
}


def _rl_details(options: TrainOptions, data: TrainData) -> str:
    from engine.train.rewards import JUDGE, OVER_REFUSAL, parse_sources

    parts = []
    for source in parse_sources(options.reward_models):
        if source.spec == JUDGE:
            what = (
                f"judge `{options.judge_model}`, {options.judge_principles} principle(s) per prompt and step, "
                f"{_REWARDS.get(data.labels, data.labels)}, both orders, reward 2p - 1"
            )
        elif source.spec == OVER_REFUSAL:
            what = "over-refusal penalty: -1 for refusing a prompt that should be answered"
        else:
            what = f"preference model `{source.spec}`, its scalar reward"
        parts.append(f"{source.weight:g} x {what}")
    return " (rewards: " + "; ".join(parts) + "; each logged as rewards/<name>)"


def _rl_provenance(options: TrainOptions, data: TrainData) -> dict[str, Any]:
    from engine.train.rewards import JUDGE, parse_sources

    sources = parse_sources(options.reward_models)
    judge = None
    if any(s.spec == JUDGE for s in sources):
        judge = {"model": options.judge_model, "principles": options.judge_principles, "reward": data.labels}
    return {"judge": judge, "rewards": [{"source": s.spec, "name": s.name, "weight": s.weight} for s in sources]}


def _rl_method(name: Kind, config: str, trainer: str, near: Kind, trainer_name: str) -> Method:
    """grpo and rloo differ only in TRL's classes: the prompts, rewards, card and provenance are shared."""
    return Method(
        name=name,
        config=f"trl.trainer.{config}",
        trainer=f"trl.trainer.{trainer}",
        near=near,
        unit="prompts",
        summary=f"online RLAIF with TRL {trainer_name}",
        inputs=_rl_inputs,
        labels_are="reward",
        group_size=_grpo_group_size,
        loads_a_judge=True,
        trainer_arguments=_rl_rewards,
        card_details=_rl_details,
        provenance=_rl_provenance,
    )


# ----------------------------------------------------------------------------- rm: pairs of several sources


def _rm_inputs(options: TrainOptions, config: Any) -> Inputs:
    from engine.train.rm_data import reward_data

    return Inputs(
        reward_data(
            options.sources,
            options.split,
            labels=options.labels,
            min_margin=options.min_margin,
            limit=options.limit,
            heldout=options.heldout,
            seed=int(config.seed),
        )
    )


def _rm_arguments(options: TrainOptions, plan: Plan) -> dict[str, Any]:
    return {"eval_dataset": plan.data.heldout}


_RM_LABELS = {
    "hard": "hard labels: TRL's loss, -log s(r_chosen - r_rejected)",
    "weighted": "TRL's loss weighted per pair by the judge's margin (2 * chosen_prob - 1)",
    "soft": (
        "soft labels: the judge's chosen_prob is the Bradley-Terry target, so s(r_chosen - r_rejected) is fitted to it"
    ),
}


def _rm_details(options: TrainOptions, data: TrainData) -> str:
    details = f"; {_RM_LABELS.get(data.labels, data.labels)}"
    if options.min_margin > 0:
        details += f"; pairs with a judge margin below {options.min_margin} dropped ({data.dropped})"
    held = len(data.heldout) if data.heldout is not None else 0
    return details + f"; {held} pair(s) held out ({options.heldout:g} of the prompts)"


def _rm_provenance(options: TrainOptions, data: TrainData) -> dict[str, Any]:
    return {"labels": data.labels, "min_margin": options.min_margin, "sources": list(options.sources)}


def _rm_measure(trainer: Any, data: TrainData) -> tuple[dict[str, Any], list[str]]:
    """Held-out accuracy, and the pairs TRL left out for being longer than max_length."""
    from engine.train.reward_model import heldout_accuracy

    notes = []
    trained = len(trainer.train_dataset)
    if trained < data.rows:
        notes.append(f"{data.rows - trained} of {data.rows} pairs were longer than max_length and left out by TRL")
    held = heldout_accuracy(trainer)
    if data.heldout is not None and held is not None and held.pairs < len(data.heldout):
        notes.append(f"{len(data.heldout) - held.pairs} held-out pair(s) longer than max_length were not scored")
    if held is None:
        return {"heldout": None, "summary": "no held-out pairs: accuracy not measured"}, notes
    return {"heldout": held.as_dict(), "summary": held.summary()}, notes


# ----------------------------------------------------------------------------- the table

METHODS: dict[Kind, Method] = {
    "sft": Method(
        name="sft",
        config="trl.trainer.sft_config:SFTConfig",
        trainer="trl.trainer.sft_trainer:SFTTrainer",
        near="dpo",
        unit="rows",
        summary="supervised fine-tuning on the final (revised) answers, TRL `SFTTrainer`, loss on the answer tokens",
        inputs=_sft_inputs,
    ),
    "dpo": Method(
        name="dpo",
        config="trl.trainer.dpo_config:DPOConfig",
        trainer="engine.train.soft_dpo:SoftLabelDPOTrainer",
        near="sft",
        unit="pairs",
        summary="direct preference optimisation on the preference pairs, TRL `DPOTrainer`",
        inputs=_dpo_inputs,
        labels_are="labels",
        card_details=_dpo_details,
        provenance=_dpo_provenance,
    ),
    "grpo": _rl_method("grpo", "grpo_config:GRPOConfig", "grpo_trainer:GRPOTrainer", "dpo", "`GRPOTrainer`"),
    "rloo": _rl_method(
        "rloo",
        "rloo_config:RLOOConfig",
        "rloo_trainer:RLOOTrainer",
        "grpo",
        "`RLOOTrainer` (REINFORCE, leave-one-out baseline)",
    ),
    "rm": Method(
        name="rm",
        config="trl.trainer.reward_config:RewardConfig",
        trainer="engine.train.reward_model:SoftRewardTrainer",
        near="dpo",
        unit="pairs",
        summary=(
            "preference model: a scalar reward head on the base model, Bradley-Terry loss on the preference pairs, "
            "TRL `RewardTrainer`"
        ),
        inputs=_rm_inputs,
        labels_are="labels",
        trainer_arguments=_rm_arguments,
        card_details=_rm_details,
        provenance=_rm_provenance,
        head="reward",
        measure=_rm_measure,
    ),
}
"""Every ``cai train`` method by name (the keys are :data:`engine.train.options.Kind`)."""


__all__ = ["METHODS", "Inputs", "Method"]
