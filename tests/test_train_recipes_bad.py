"""`cai train` with recipe values TRL accepts at first but cannot train with: refused before any model loads.

Each bad value (in a recipe file, with ``--set`` or with a flag) must end in
one readable line that names where it was set and the key, with no traceback,
no model load and no output folder left behind; a run that fails after the
model loaded must not leave an empty ``OUT/checkpoints`` that makes the next
run refuse.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import engine.train.run
from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import generate
from engine.train import TrainError, TrainOptions, train
from engine.train.checkpoints import CHECKPOINTS, check_out
from tests.models import tiny_model_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `cai generate` run folder made by the scripted backend (4 pairs)."""
    out = tmp_path_factory.mktemp("gen") / "run"
    generate(GenerateConfig(out=out, model="scripted", prompts="mixed", limit=4, revisions=1), progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a run gets as far as loading a model."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the recipe was checked")

    monkeypatch.setattr(engine.train.run, "load_model", refuse)


def invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(cli, ["train", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    return result


RECIPE_CASES = [
    ("per_device_train_batch_size: -1", "per_device_train_batch_size must be a whole number of at least 1"),
    ("gradient_accumulation_steps: 0", "gradient_accumulation_steps must be a whole number of at least 1"),
    ("learning_rate: -1.0e-5", "learning_rate must be a number of at least 0"),
    ("learning_rate: .nan", "learning_rate must be a number of at least 0"),
    ("adam_beta1: 1.5", "adam_beta1 must be at least 0 and below 1"),
    ("seed: -3", "seed must be a whole number from 0 to 2**32 - 1"),
    ("max_grad_norm: -1", "max_grad_norm must be a number of at least 0"),
    ("dataloader_num_workers: -2", "dataloader_num_workers must be a whole number of at least 0"),
    ("max_length: 0", "max_length must be a whole number of at least 1"),
    ("beta: -0.1", "beta must be a number above 0"),
    ("max_steps: 0", "max_steps must be -1 (train for num_train_epochs) or at least 1"),
    ("num_train_epochs: 1e23", "num_train_epochs=1e+23 means about 1e+23 optimizer steps on 4 rows"),
    ("num_train_epochs: 0", "num_train_epochs=0 gives no optimizer step on 4 rows"),
    ("max_steps: 1e12", "max_steps=1e+12 means about 1e+12 optimizer steps"),
    ("num_train_epochs: ten", "num_train_epochs: expected float, got 'ten'"),
    ("per_device_train_batch_size: two", "per_device_train_batch_size: expected int, got 'two'"),
    ("warmup_steps: -5", "warmup_steps=-5: DPOConfig refused the settings: "),
    ("lr_scheduler_type: sideways", "lr_scheduler_type='sideways': DPOConfig refused the settings: "),
    ("optim: sgd\noptim_args: momentum=-1", "the optimizer sgd refused"),
    ("lr_scheduler_kwargs: {power: 2}", "the learning-rate scheduler refused"),
]


@pytest.mark.parametrize(("text", "message"), RECIPE_CASES)
@pytest.mark.usefixtures("no_model_load")
def test_a_bad_value_in_a_recipe_file_is_one_line_naming_the_file_and_the_key(
    run: Path, tmp_path: Path, text: str, message: str
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text + "\n")
    out = tmp_path / "out"
    result = invoke(["dpo", "--data", str(run), "--out", str(out), "--config", str(recipe)])
    assert message in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert str(recipe) in line, line  # names the file ...
    key = message.split()[0].split("=")[0].split(":")[0]
    if not message.startswith("the "):
        assert key in line  # ... and the key
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "per_device_train_batch_size=-1"], "command line: per_device_train_batch_size must be"),
        (["--set", "per_device_train_batch_size=-1"], "change --set per_device_train_batch_size=... on the command"),
        (["--learning-rate", "-0.1"], "--learning-rate: learning_rate must be a number of at least 0"),
        (["--lr", "-0.1"], "give --learning-rate another value"),
        (["--epochs", "1e23", "--max-steps", "-1"], "--epochs: num_train_epochs=1e+23 means about"),
        (["--set", "learning_rate=fast"], "command line: learning_rate: expected float, got 'fast'"),
        (["--seed", "-1"], "--seed: seed must be a whole number from 0 to 2**32 - 1, got -1"),
        (["--logging-steps", "-1"], "--logging-steps: logging_steps must be a number of at least 0"),
    ],
)
@pytest.mark.usefixtures("no_model_load")
def test_a_bad_value_on_the_command_line_names_the_flag_or_set(
    run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = invoke(["dpo", "--data", str(run), "--out", str(out), "--config", "dpo-cpu-demo", *args])
    assert message in result.output
    assert not out.exists()


@pytest.mark.usefixtures("no_model_load")
def test_sft_and_grpo_values_are_checked_before_the_model_loads(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sft = invoke(["sft", "--data", str(run), "--out", str(out), "--set", "per_device_train_batch_size=0"])
    assert "command line: per_device_train_batch_size must be a whole number of at least 1" in sft.output
    grpo = invoke(["grpo", "--prompts", "mixed", "--limit", "2", "--out", str(out), "--set", "temperature=0"])
    assert "command line: temperature must be a number above 0" in grpo.output
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here")
@pytest.mark.usefixtures("no_model_load")
def test_an_optimizer_whose_package_is_missing_is_one_line(run: Path, tmp_path: Path) -> None:
    result = invoke(["dpo", "--data", str(run), "--out", str(tmp_path / "o"), "--set", "optim=adamw_bnb_8bit"])
    assert "command line: optim='adamw_bnb_8bit': You need to install `bitsandbytes`" in result.output


def test_a_run_that_fails_after_the_model_loaded_leaves_no_folder_that_blocks_the_next(
    run: Path, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.train.soft_dpo import SoftLabelDPOTrainer

    def refuse(self: Any, **kwargs: Any) -> None:
        assert (out / CHECKPOINTS).is_dir()  # the trainer made its folder: that is what must not stay behind
        raise ValueError("batch_size should be a positive integer value, but got batch_size=-1")

    monkeypatch.setattr(SoftLabelDPOTrainer, "train", refuse)
    out = tmp_path / "out"
    options = TrainOptions(kind="dpo", data=run, out=out, model=str(tiny_dir), overrides={"max_steps": 1})
    with pytest.raises(TrainError, match="training stopped before its first step: batch_size should be"):
        train(options)
    assert not out.exists()

    def interrupt(self: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SoftLabelDPOTrainer, "train", interrupt)
    out.mkdir()  # a folder the user made stays, empty
    with pytest.raises(KeyboardInterrupt):
        train(options)
    assert out.is_dir() and not any(out.iterdir())


def test_an_empty_checkpoints_folder_left_by_a_failed_run_does_not_block_the_next(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / CHECKPOINTS / "runs").mkdir(parents=True)  # what an older version left after a failure
    assert check_out(out, resume=False, force=False) is None
    assert not (out / CHECKPOINTS).exists()
    (out / CHECKPOINTS / "checkpoint-1").mkdir(parents=True)
    (out / CHECKPOINTS / "checkpoint-1" / "trainer_state.json").write_text("{}")
    with pytest.raises(TrainError, match="--resume"):  # a real checkpoint still needs --resume or --force
        check_out(out, resume=False, force=False)
