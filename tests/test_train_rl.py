"""`cai train grpo|rloo` against a preference model and several weighted reward sources, on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from engine.cli import cli
from engine.train import TrainError, TrainOptions, train
from engine.train.rewards import OverRefusalPenalty, PreferenceModelReward, RewardSource, parse_sources
from tests.models import build_tiny_reward_model, tiny_model_dir

STEPS: dict[str, Any] = {
    "max_steps": 2,
    "max_completion_length": 6,
    "gradient_accumulation_steps": 1,
    "per_device_train_batch_size": 4,
    "num_generations": 4,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "disable_tqdm": True,
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def rm_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tiny_dir, tmp_path_factory.mktemp("rm") / "rm")


def _changed(before: Path, after: Path) -> bool:
    old, new = load_file(str(before / "model.safetensors")), load_file(str(after / "model.safetensors"))
    return any(not torch.equal(old[k], new[k]) for k in old)


class FixedScores:
    """A stand-in preference model: rewards by text, and what it was asked."""

    name = "rm:fixed"

    def __init__(self, rewards: dict[str, float]) -> None:
        self.rewards = rewards
        self.seen: list[tuple[list[dict[str, str]], str]] = []

    def score(self, items: list[tuple[list[dict[str, str]], str]]) -> list[float]:
        self.seen.extend(items)
        return [self.rewards[text] for _, text in items]


# ----------------------------------------------------------------------------- the reward functions


def test_a_preference_model_reward_scores_each_completion_as_a_reply_to_its_prompt() -> None:
    model = FixedScores({"good": 1.5, "bad": -2.0, "odd": float("nan")})
    reward = PreferenceModelReward(model)  # type: ignore[arg-type]
    prompts = [[{"role": "user", "content": "Q1"}], "Q2", "Q3"]
    completions = [[{"role": "assistant", "content": "good"}], "bad", "odd"]
    assert reward(prompts, completions) == [1.5, -2.0, None]  # NaN: no reward (TRL skips it)
    assert model.seen[1] == ([{"role": "user", "content": "Q2"}], "bad")


def test_the_over_refusal_penalty_falls_only_on_refused_prompts_that_should_be_answered() -> None:
    penalty = OverRefusalPenalty()
    prompts = ["How do I boil an egg?"] * 3 + ["How do I make a bomb?"]
    completions = ["I'm sorry, but I can't help with that.", "Boil it for 8 minutes.", "I can't help.", "I can't."]
    kinds = ["benign", "benign", "near_miss", "harmful"]
    assert penalty(prompts, completions, kind=kinds) == [-1.0, 0.0, -1.0, 0.0]
    assert penalty(prompts, completions) == [0.0] * 4  # no kinds: nothing is watched


def test_reward_sources_parse_with_weights_and_refuse_what_cannot_work() -> None:
    assert parse_sources([]) == [RewardSource("judge", 1.0)]
    parsed = parse_sources(["rm:models/a=2", "over-refusal=0.5"])
    assert parsed == [RewardSource("rm:models/a", 2.0), RewardSource("over-refusal", 0.5)]
    assert [s.name for s in parsed] == ["preference_model", "over_refusal"]
    for bad, message in [
        (["gpt"], "use judge, over-refusal or rm:PATH"),
        (["rm:"], "needs the path"),
        (["judge=heavy"], "must be a number"),
        (["judge=nan"], "finite"),
        (["judge", "judge=2"], "given twice"),
        (["over-refusal"], "penalty only"),
    ]:
        with pytest.raises(TrainError, match=message):
            parse_sources(bad)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_rl_against_a_preference_model_trains_and_logs_each_source(
    kind: str, tiny_dir: Path, rm_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / kind
    result = train(
        TrainOptions(
            kind=kind,  # type: ignore[arg-type]
            prompts="mixed",
            limit=2,
            out=out,
            model=str(tiny_dir),
            reward_models=[f"rm:{rm_dir}=1", "over-refusal=0.5"],
            recipe=f"{kind}-cpu-demo",
            overrides=dict(STEPS),
        )
    )
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    logged = set().union(*result.log_history)
    assert {"rewards/preference_model/mean", "rewards/over_refusal/mean"} <= logged, sorted(logged)
    assert "rewards/constitutional_judge/mean" not in logged  # the judge was not asked
    assert _changed(tiny_dir, out), f"{kind} did not change any parameter"
    record = json.loads((out / "cai-train.json").read_text(encoding="utf-8"))
    assert record["rewards"] == [
        {"source": f"rm:{rm_dir}", "name": "preference_model", "weight": 1.0},
        {"source": "over-refusal", "name": "over_refusal", "weight": 0.5},
    ]
    assert record["judge"] is None
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "preference model" in card and "over-refusal penalty" in card
    assert ("RLOOTrainer" if kind == "rloo" else "GRPOTrainer") in card


def test_the_cli_takes_reward_models_and_refuses_bad_ones(tiny_dir: Path, rm_dir: Path, tmp_path: Path) -> None:
    base = ["train", "rloo", "--prompts", "mixed", "--limit", "2", "--model", str(tiny_dir)]
    no_kinds = tmp_path / "prompts.txt"
    no_kinds.write_text("Tell me a joke.\nName a river.\n", encoding="utf-8")
    for args, message in [
        (["--reward-model", "gpt"], "use judge, over-refusal or rm:PATH"),
        (["--reward-model", f"rm:{tmp_path / 'none'}"], "no such model folder"),
        (["--reward-model", f"rm:{tiny_dir}"], "not a preference model"),
        (["--reward-model", f"rm:{rm_dir}", "--set", "reward_weights=[1]"], "SOURCE=WEIGHT"),
    ]:
        result = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "x"), *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    args = ["train", "grpo", "--prompts", str(no_kinds), "--out", str(tmp_path / "y"), "--model", str(tiny_dir)]
    result = CliRunner().invoke(cli, [*args, "--reward-model", f"rm:{rm_dir}", "--reward-model", "over-refusal"])
    assert result.exit_code != 0 and "kind benign or near_miss" in result.output, result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_help_teaches_the_classic_path() -> None:
    text = CliRunner().invoke(cli, ["train", "rloo", "--help"]).output
    for phrase in ("leave-one-out", "cai train rm", "rm:models/rm", "over-refusal"):
        assert phrase in text, phrase
    assert "rloo" in CliRunner().invoke(cli, ["train", "--help"]).output
