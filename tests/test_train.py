"""`cai train`: SFT and DPO on a tiny real model, soft labels, recipes, the saved model, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from datasets import Dataset, DatasetDict, load_from_disk
from safetensors.torch import load_file

from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import generate
from engine.train import TrainError, TrainOptions, preference_data, read_recipe, sft_data, train
from engine.train.preflight import run_defaults
from engine.train.recipes import builtin_recipes
from engine.train.settings import build_config
from tests.models import tiny_model_dir

ROOT = Path(__file__).resolve().parent.parent
FAST: dict[str, Any] = {
    "per_device_train_batch_size": 2,
    "learning_rate": 1e-3,
    "max_length": 256,
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "save_strategy": "no",
    "disable_tqdm": True,
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `cai generate` run folder made by the scripted backend (6 pairs, 6 SFT rows)."""
    out = tmp_path_factory.mktemp("gen") / "run"
    generate(GenerateConfig(out=out, model="scripted", prompts="mixed", limit=6, revisions=1), progress=False)
    return out


@pytest.fixture(scope="module")
def judged(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's dataset with judge columns, as the AI-feedback judge adds them."""
    data = load_from_disk(str(run / "dataset"))
    probs = [0.95, 0.6, 0.9, 0.55, 0.8, 1.0]
    pairs = unjudged(data["preferences"]).add_column("chosen_prob", probs)
    pairs = pairs.add_column("margin", [2 * p - 1 for p in probs])
    folder = tmp_path_factory.mktemp("judged") / "dataset"
    DatasetDict({"preferences": pairs, "sft": data["sft"]}).save_to_disk(str(folder))
    return folder


def unjudged(pairs: Dataset) -> Dataset:
    return pairs.remove_columns([c for c in ("chosen_prob", "margin") if c in pairs.column_names])


@pytest.fixture(scope="module")
def plain(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's pairs without judge columns (as `cai generate --no-judge` or other tools leave them)."""
    folder = tmp_path_factory.mktemp("plain") / "preferences"
    unjudged(load_from_disk(str(run / "dataset"))["preferences"]).save_to_disk(str(folder))
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    assert before.keys() == after.keys()
    return [k for k in before if not torch.equal(before[k], after[k])]


def generates(folder: Path) -> str:
    from engine.backends.base import SamplingParams
    from engine.backends.hf import HFBackend

    backend = HFBackend(str(folder), dtype="float32", device="cpu")
    (completion,) = backend.generate([[{"role": "user", "content": "Hello?"}]], SamplingParams(max_new_tokens=4))
    assert completion.tokens > 0
    return completion.text


# ----------------------------------------------------------------------------- training


def test_sft_trains_saves_a_plain_model_with_a_card_and_resumes(run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    options = TrainOptions(
        kind="sft",
        data=run,
        out=out,
        model=str(tiny_dir),
        overrides={**FAST, "max_steps": 2, "save_strategy": "steps", "save_steps": 1},
    )
    result = train(options)
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    assert result.data.rows == 6 and result.data.split == "sft"
    assert changed(weights(tiny_dir), weights(out)), "SFT did not change any parameter"
    generates(out)
    card = (out / "README.md").read_text()
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["constitution"]["hash"] in card and str(tiny_dir) in card and "SFTTrainer" in card
    assert "max_steps: 2" in card  # the settings block is a recipe
    provenance = json.loads((out / "cai-train.json").read_text())
    assert provenance["kind"] == "sft" and provenance["rows"] == 6
    assert provenance["constitution"]["hash"] == manifest["constitution"]["hash"]
    assert (out / "constitution.yaml").is_file()
    assert not (out / "adapter_config.json").exists()

    with pytest.raises(TrainError, match="--resume"):
        train(options)
    resumed = train(options.model_copy(update={"resume": True, "overrides": {**options.overrides, "max_steps": 3}}))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.steps == 3


def test_dpo_with_soft_labels_trains_and_logs_targets(judged: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    result = train(
        TrainOptions(kind="dpo", data=judged, out=out, model=str(tiny_dir), overrides={**FAST, "max_steps": 2})
    )
    assert result.data.labels == "soft"
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    assert changed(weights(tiny_dir), weights(out)), "DPO did not change any parameter"
    logged = [h for h in result.log_history if "labels/target_prob" in h]
    assert logged and 0.5 <= logged[0]["labels/target_prob"] <= 1.0
    assert "rewards/margins" in logged[0]
    generates(out)
    assert "soft labels" in (out / "README.md").read_text()


def test_dpo_with_lora_merges_the_adapter_into_a_plain_model(
    run: Path, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen base trains in bf16 (as on a CPU with fast bf16), yet the merged model keeps the base's fp32."""
    pytest.importorskip("peft")
    from transformers import TrainerCallback

    import engine.backends.torch_device

    monkeypatch.setattr(engine.backends.torch_device, "cpu_has_fast_bf16", lambda: True)  # the same on every CPU

    seen: set[torch.dtype] = set()

    class BaseDtype(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            seen.update(p.dtype for n, p in model.named_parameters() if "lora_" not in n)

    out = tmp_path / "lora"
    result = train(
        TrainOptions(
            kind="dpo",
            data=run,
            out=out,
            model=str(tiny_dir),
            overrides={**FAST, "max_steps": 2, "learning_rate": 1e-2},
            lora=True,
            lora_overrides={"r": 4, "lora_alpha": 8},
        ),
        callbacks=[BaseDtype()],
    )
    assert seen == {torch.bfloat16}  # the branch under test: the frozen base trained in bf16
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
    before, after = weights(tiny_dir), weights(out)
    assert not any("lora" in k for k in after)
    assert {t.dtype for t in after.values()} == {torch.float32}  # the base checkpoint's own precision
    touched = changed(before, after)
    assert touched and all("proj" in k for k in touched), touched  # only the adapted linear layers moved
    for key in touched:  # by the adapter's low-rank update, not by a round trip through bf16
        assert torch.linalg.matrix_rank(after[key] - before[key]) <= 4, key
    generates(out)
    assert result.settings["lora"]["r"] == 4


# ----------------------------------------------------------------------------- GRPO


def scripted_judge() -> Any:
    """A judge that prefers whichever response says GOOD over one that says BAD (90 %), in either slot."""
    import constitution
    from engine.backends.base import ScoreRequest
    from engine.backends.scripted import ScriptedBackend
    from engine.judge import Judge

    def scores(request: ScoreRequest) -> list[float]:
        text = request.chat[-1]["content"]
        good, bad = text.find("GOOD"), text.find("BAD")
        if good < 0 or bad < 0:
            return [math.log(0.5), math.log(0.5)]
        return [math.log(0.9), math.log(0.1)] if good < bad else [math.log(0.1), math.log(0.9)]

    return Judge(ScriptedBackend(scores=scores), constitution=constitution.load("default"))


def test_constitutional_reward_ranks_each_group_and_judges_against_references() -> None:
    import constitution
    from engine.train.grpo import ConstitutionalReward

    judge = scripted_judge()
    rules = constitution.load("default")
    p = [{"role": "user", "content": "How do I pick a lock?"}]
    q = [{"role": "user", "content": "Tell me a joke."}]
    lone = [{"role": "user", "content": "Alone?"}]
    completions = [[{"role": "assistant", "content": c}] for c in ("GOOD a", "BAD", "GOOD b", "GOOD", "BAD", "x")]
    reward = ConstitutionalReward(judge, rules, principles=2)
    rewards = reward([p, p, p, q, q, lone], completions)
    assert rewards == pytest.approx([0.4, -0.8, 0.4, 0.8, -0.8, 0.0])
    assert judge.score_calls == 1  # every pair, order and principle of the batch in one backend call
    by_reference = ConstitutionalReward(judge, rules, mode="reference")
    refs = ["BAD ref", "GOOD ref", "BAD ref"]
    assert by_reference([p, p, q], completions[:3], reference=refs) == pytest.approx([0.8, -0.8, 0.8])
    with pytest.raises(TrainError, match="reference"):
        by_reference([p], completions[:1])


def test_grpo_trains_with_the_judge_as_reward(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    result = train(
        TrainOptions(
            kind="grpo",
            prompts="mixed",
            limit=2,
            out=out,
            model=str(tiny_dir),
            judge_model=str(tiny_dir),
            recipe="grpo-cpu-demo",
            overrides={k: v for k, v in FAST.items() if k != "max_length"}
            | {"max_steps": 2, "max_completion_length": 6, "gradient_accumulation_steps": 1}
            | {"per_device_train_batch_size": 4, "num_generations": 4},
        )
    )
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    assert result.data.labels == "group"
    assert any("rewards/constitutional_judge/mean" in h for h in result.log_history)
    assert changed(weights(tiny_dir), weights(out)), "GRPO did not change any parameter"
    generates(out)
    provenance = json.loads((out / "cai-train.json").read_text())
    assert provenance["judge"]["model"] == str(tiny_dir) and provenance["constitution"]["id"] == "default"
    assert "GRPOTrainer" in (out / "README.md").read_text()


# ----------------------------------------------------------------------------- soft-label loss


def test_soft_loss_is_the_formula_and_reduces_to_sigmoid_dpo() -> None:
    from engine.train import soft_dpo_loss

    torch.manual_seed(0)
    delta = torch.randn(16) * 5
    p = torch.rand(16) * 0.5 + 0.5
    w = torch.rand(16)
    beta = 0.3
    sig = torch.sigmoid(beta * delta)
    expected = -(p * torch.log(sig) + (1 - p) * torch.log(1 - sig))
    torch.testing.assert_close(soft_dpo_loss(delta, beta, p), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(soft_dpo_loss(delta, beta, p, w), expected * w, rtol=1e-5, atol=1e-6)
    hard = soft_dpo_loss(delta, beta, torch.ones(16))
    torch.testing.assert_close(hard, -torch.nn.functional.logsigmoid(beta * delta))
    # A coin flip pulls the margin to zero; a sure label always pushes it up.
    x = torch.tensor([2.0], requires_grad=True)
    soft_dpo_loss(x, 1.0, torch.tensor([0.5])).sum().backward()
    assert x.grad is not None and x.grad.item() > 0
    x.grad = None
    soft_dpo_loss(x, 1.0, torch.tensor([1.0])).sum().backward()
    assert x.grad.item() < 0
    # Stable far from zero, where log(sigmoid) would underflow.
    assert torch.isfinite(soft_dpo_loss(torch.tensor([-500.0, 500.0]), 1.0, torch.tensor([0.9, 0.9]))).all()


def test_trainer_soft_path_with_sure_labels_equals_trl_loss(run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    """p = 1, w = 1 through the subclass gives TRL's own sigmoid loss on the same batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, SFTConfig

    from engine.train.recipes import Recipe
    from engine.train.soft_dpo import SoftLabelDPOTrainer

    hard = preference_data(run, labels="hard").dataset
    sure = hard.add_column("cai_target_prob", [1.0] * len(hard)).add_column("cai_pair_weight", [1.0] * len(hard))
    config, _ = build_config(DPOConfig, Recipe("test"), {**FAST, "max_steps": 1}, run_defaults(tmp_path), SFTConfig)
    losses = []
    for dataset in (hard, sure):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
        trainer = SoftLabelDPOTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(tiny_dir)
        )
        assert trainer.soft_labels == (dataset is sure)
        batch = next(iter(trainer.get_train_dataloader()))
        assert ("cai_target_prob" in batch) == (dataset is sure)
        with torch.no_grad():
            losses.append(float(trainer.compute_loss(trainer.model, batch)))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


# ----------------------------------------------------------------------------- data


def test_label_modes_targets_weights_and_margin_filter(judged: Path, plain: Path) -> None:
    soft = preference_data(judged)
    assert soft.labels == "soft"
    assert soft.dataset["cai_target_prob"] == pytest.approx([0.95, 0.6, 0.9, 0.55, 0.8, 1.0])
    assert soft.dataset["cai_pair_weight"] == [1.0] * 6
    weighted = preference_data(judged, labels="weighted")
    assert weighted.dataset["cai_pair_weight"] == pytest.approx([0.9, 0.2, 0.8, 0.1, 0.6, 1.0])
    assert weighted.dataset["cai_target_prob"] == [1.0] * 6
    hard = preference_data(judged, labels="hard", min_margin=0.5)
    assert "cai_target_prob" not in hard.dataset.column_names
    assert (hard.rows, hard.dropped) == (4, 2) and any("dropped" in n for n in hard.notes)
    without = preference_data(plain, labels="soft")
    assert without.labels == "hard" and any("hard labels" in n for n in without.notes)
    assert preference_data(plain).labels == "hard"
    assert preference_data(plain, labels="weighted", min_margin=0.5).rows == 6  # nothing to filter on


def test_a_margin_filter_that_drops_every_pair_is_an_error(run: Path, tmp_path: Path) -> None:
    pairs = unjudged(load_from_disk(str(run / "dataset"))["preferences"]).select(range(2))
    pairs = pairs.add_column("chosen_prob", [0.6, 0.7])
    pairs.save_to_disk(str(tmp_path / "unsure"))
    with pytest.raises(TrainError, match="lower --min-margin"):
        preference_data(tmp_path / "unsure", min_margin=0.5)


def test_sft_rows_become_prompt_and_completion(run: Path) -> None:
    data = sft_data(run, limit=3)
    assert data.rows == 3 and data.total == 6
    row = data.dataset[0]
    assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"
    assert data.constitution is not None and data.constitution_hashes == [data.constitution["hash"]]


# ----------------------------------------------------------------------------- recipes


def test_shipped_recipes_fit_trl_config_classes() -> None:
    from engine.train.methods import METHODS

    recipes = builtin_recipes()
    assert {"sft-cpu-demo", "dpo-cpu-demo", "dpo-lora", "grpo-cpu-demo", "rm-cpu-demo", "rm-lora"} <= set(recipes)
    for name in recipes:
        recipe = read_recipe(name)
        method = METHODS[name.split("-")[0]]  # type: ignore[index]
        config_class, other = method.config_class(), method.near_config_class()
        config, _ = build_config(config_class, recipe, {}, run_defaults(Path("unused")), other)
        assert config.learning_rate > 0
        if "lora" in name:
            assert recipe.lora is not None and recipe.lora["r"] > 0


def test_flags_override_the_recipe_and_yaml_numbers_are_read_as_numbers(tmp_path: Path) -> None:
    from trl import DPOConfig

    path = tmp_path / "r.yaml"
    # YAML 1.1 reads 1e-5 as a string and `no` as False
    path.write_text("learning_rate: 1e-5\nbeta: 0.2\nnum_train_epochs: 2\nsave_strategy: no\n")
    config, settings = build_config(DPOConfig, read_recipe(str(path)), {"beta": 0.5}, run_defaults(tmp_path))
    assert config.learning_rate == 1e-5 and config.beta == 0.5 and config.num_train_epochs == 2
    assert config.save_strategy == "no"
    assert settings["beta"] == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lerning_rate: 0.1\n", "unknown DPOConfig field 'lerning_rate'; did you mean 'learning_rate'?"),
        ("completion_only_loss: true\n", "it is a SFTConfig field"),
        ("beta: high\n", "beta: expected float, got 'high'"),
        ("- a list\n", "a recipe is a mapping"),
        ("beta: [\n", "YAML error"),
        ("lora: 3\n", "lora: a mapping of peft.LoraConfig"),
    ],
)
def test_bad_recipes_are_one_clear_message(tmp_path: Path, text: str, message: str) -> None:
    from trl import DPOConfig, SFTConfig

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TrainError) as error:
        build_config(DPOConfig, read_recipe(str(path)), {}, run_defaults(tmp_path), SFTConfig)
    assert message in str(error.value)
    assert str(path) in str(error.value) or "YAML" in str(error.value) or "mapping" in str(error.value)


# ----------------------------------------------------------------------------- CLI


def _empty_split(tmp_path: Path, run: Path) -> Path:
    data = load_from_disk(str(run / "dataset"))
    folder = tmp_path / "empty"
    DatasetDict({"preferences": data["preferences"].select([]), "sft": data["sft"]}).save_to_disk(str(folder))
    return folder


def _no_columns(tmp_path: Path) -> Path:
    folder = tmp_path / "nocols"
    Dataset.from_list([{"question": "q", "answer": "a"}]).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dpo", "--data", "{tmp}/missing"], "no such data folder"),
        (["dpo", "--data", "{tmp}"], "holds no dataset"),
        (["dpo", "--data", "{nocols}"], "lacks columns 'prompt', 'chosen', 'rejected'"),
        (["sft", "--data", "{nocols}"], "neither a 'messages' column"),
        (["dpo", "--data", "{empty}"], "split 'preferences' is empty"),
        (["dpo", "--data", "{run}", "--split", "train"], "no split 'train'"),
        (["dpo", "--data", "{run}", "--model", "{tmp}/no-model"], "no such model folder"),
        (["dpo", "--data", "{run}", "--model", "{run}"], "holds no model"),
        (["dpo", "--data", "{run}", "--config", "{tmp}/typo.yaml"], "did you mean 'beta'"),
        (["dpo", "--data", "{run}", "--config", "dpo-cpu-dmo"], "did you mean 'dpo-cpu-demo'"),
        (["dpo", "--data", "{run}", "--set", "lerning_rate=1"], "did you mean 'learning_rate'"),
        (["dpo", "--data", "{run}", "--set", "novalue"], "expected KEY=VALUE"),
        (["dpo", "--data", "{run}", "--labels", "fuzzy"], "fuzzy"),
        (["sft", "--data", "{run}", "--beta", "0.1"], "No such option"),
        (["dpo", "--data", "{run}", "--report-to", "tensorbored"], "report_to: unknown tensorbored"),
        (["grpo"], "--prompts SOURCE"),
        (["grpo", "--prompts", "mixed", "--reward", "reference"], "needs reference answers"),
        (["grpo", "--prompts", "{tmp}/missing.jsonl"], "missing.jsonl"),
        (["grpo", "--prompts", "mixed", "-c", "no-such-rules"], "no-such-rules"),
        (["grpo", "--prompts", "mixed", "--num-generations", "1"], "GRPOConfig refused the settings: GRPO requires"),
        (["grpo", "--prompts", "mixed", "--judge-model", "{tmp}/nope"], "judge model: "),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path: Path, run: Path, args: list[str], message: str) -> None:
    (tmp_path / "typo.yaml").write_text("bta: 0.1\n")
    names = {"tmp": tmp_path, "run": run, "nocols": _no_columns(tmp_path), "empty": _empty_split(tmp_path, run)}
    argv = ["train", *(a.format(**names) for a in args), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()


def test_a_reporting_integration_that_is_not_installed_is_one_message(run: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("clearml") is not None:
        pytest.skip("clearml is installed here")
    argv = ["train", "sft", "--data", str(run), "--out", str(tmp_path / "out"), "--report-to", "clearml"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1 and "report_to clearml: not installed; pip install clearml" in result.output


def test_help_teaches_the_workflow() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    assert "cai train dpo" in result.output and "recipes" in result.output
    dpo = CliRunner().invoke(cli, ["train", "dpo", "--help"]).output
    assert "Examples:" in dpo and "--labels" in dpo and "--resume" in dpo and "--lora" in dpo
    grpo = CliRunner().invoke(cli, ["train", "grpo", "--help"]).output
    assert "Examples:" in grpo and "--judge-model" in grpo and "--reward" in grpo
    listed = CliRunner().invoke(cli, ["train", "recipes"]).output
    assert "dpo-cpu-demo" in listed and "sft-cpu-demo" in listed


def test_train_help_and_recipes_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "for argv in (['cai', 'train', 'dpo', '--help'], ['cai', 'train', 'recipes']):\n"
        "    sys.argv = argv\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "HEAVY []" in run.stderr


def test_cli_trains_dpo_end_to_end(run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-dpo"
    argv = ["train", "dpo", "--data", str(run), "--out", str(out), "--model", str(tiny_dir), "--config", "dpo-cpu-demo"]
    argv += ["--max-steps", "1", "--batch-size", "2", "--max-length", "128", "--set", "save_strategy=no"]
    argv += ["--labels", "hard"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert "trained dpo for 1 steps on 6 pairs, hard labels" in result.output
    provenance = json.loads((out / "cai-train.json").read_text())
    assert provenance["recipe"] == "dpo-cpu-demo"
    assert provenance["settings"]["max_length"] == 128 and provenance["settings"]["beta"] == 0.1


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_dpo_on_the_embedded_model_grows_the_chosen_over_rejected_margin(tmp_path: Path) -> None:
    """DPO on demo-like pairs: the policy's log-prob margin of chosen over rejected grows on the training pairs."""
    from bench.train_speed import demo_like_rows, margins, write_demo_like_data
    from engine.backends.default_model import default_model_path

    data = write_demo_like_data(tmp_path / "data", n=8, labels=False)
    rows = demo_like_rows(8, labels=False)
    before = margins(str(default_model_path()), rows)
    out = tmp_path / "dpo"
    result = train(
        TrainOptions(
            kind="dpo",
            data=data,
            out=out,
            recipe="dpo-cpu-demo",
            overrides={"max_steps": 3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
            | {"learning_rate": 3e-5, "max_length": 256, "save_strategy": "no", "disable_tqdm": True},
        )
    )
    assert result.train_loss is not None and math.isfinite(result.train_loss)
    after = margins(str(out), rows)
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    print(f"mean margin before {mean_before:.2f}, after {mean_after:.2f}, {result.seconds:.0f} s of training")
    assert mean_after > mean_before + 1.0, (before, after)
    assert sum(a > b for a, b in zip(after, before, strict=True)) >= 6
