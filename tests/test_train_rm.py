"""`cai train rm`: a preference model on soft labels, mixed sources, held-out accuracy, on the tiny model."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from datasets import Dataset, load_from_disk

from engine.backends.base import Chat, SamplingParams, ScoreRequest
from engine.backends.scripted import ScriptedBackend, quoted_responses, uniform_scores
from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import generate
from engine.train import TrainError, TrainOptions, train
from engine.train.data import TARGET_COLUMN, WEIGHT_COLUMN
from engine.train.reward_model import soft_bt_loss
from engine.train.rm_data import SOURCE_COLUMN, reward_data
from tests.models import tiny_model_dir

FAST = [
    "--lr", "1e-3", "--batch-size", "8", "--max-length", "256", "--no-gradient-checkpointing",
    "--set", "save_strategy=no", "--set", "disable_tqdm=true", "--logging-steps", "5",
]  # fmt: skip

REFUSAL = "I'm sorry, but I can't help with that."
WORDS = [
    "river",
    "stone",
    "lamp",
    "garden",
    "window",
    "coffee",
    "paper",
    "music",
    "bridge",
    "cloud",
    "orange",
    "forest",
]


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def taste_reply(chat: Chat, params: SamplingParams) -> str:
    """A policy that refuses about half the time, with varied words after the opening."""
    n = _hash(chat[-1]["content"])
    body = " ".join(WORDS[(n >> (4 * i)) % len(WORDS)] for i in range(3 + n % 4))
    return f"{REFUSAL} {body}" if n % 2 == 0 else f"Here is what I know: {body}."


def no_refusal_is_better(request: ScoreRequest) -> list[float]:
    """The scripted judge's taste: of two quoted responses, the one without the refusal phrase is better (p 0.8)."""
    found = quoted_responses(request.chat[-1]["content"])
    if set(found) != {"A", "B"} or len(request.options) != 2:
        return uniform_scores(request)
    a, b = "sorry" in found["A"], "sorry" in found["B"]
    if a == b:
        return uniform_scores(request)
    return [math.log(0.2), math.log(0.8)] if a else [math.log(0.8), math.log(0.2)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def taste_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose every pair the scripted judge ordered by its taste (about 160 pairs, chosen_prob 0.8)."""
    out = tmp_path_factory.mktemp("taste") / "run"
    config = GenerateConfig(out=out, model="scripted", prompts="mixed", revisions=1, judge_check="none")
    generate(config, progress=False, backends=lambda spec, **_: ScriptedBackend(taste_reply, no_refusal_is_better))
    return out


def _pairs_file(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the loss


def test_soft_loss_is_bradley_terry_of_the_target_and_tends_to_trl_at_one() -> None:
    delta = torch.tensor([2.0, -1.0, 0.0])
    target = torch.tensor([0.7, 1.0, 0.5])
    expected = [-(0.7 * math.log(1 / (1 + math.exp(-2))) + 0.3 * math.log(1 / (1 + math.exp(2)))), math.log(1 + math.e)]
    loss = soft_bt_loss(delta, target)
    assert loss[0].item() == pytest.approx(expected[0], rel=1e-5)
    assert loss[1].item() == pytest.approx(expected[1], rel=1e-5)  # p = 1: -log s(delta), TRL's loss
    assert loss[2].item() == pytest.approx(math.log(2), rel=1e-5)
    assert soft_bt_loss(delta, target, torch.tensor([0.5, 0.0, 1.0]))[0].item() == pytest.approx(expected[0] / 2)
    # its minimum in delta sits where s(delta) equals the target
    grid = torch.linspace(-5, 5, 2001)
    best = grid[soft_bt_loss(grid, torch.full_like(grid, 0.7)).argmin()]
    assert torch.sigmoid(best).item() == pytest.approx(0.7, abs=0.01)


def test_trainer_soft_path_with_sure_labels_equals_trl_loss_on_the_same_batch(
    taste_run: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from engine.train.reward_model import SoftRewardTrainer

    data = reward_data([str(taste_run)], labels="hard", heldout=0, limit=8)
    sure = data.dataset.add_column(TARGET_COLUMN, [1.0] * 8).add_column(WEIGHT_COLUMN, [1.0] * 8)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_dir), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(output_dir=str(tmp_path / "c"), use_cpu=True, report_to="none", per_device_train_batch_size=8)
    soft = SoftRewardTrainer(model=model, args=args, train_dataset=sure, processing_class=tokenizer)
    hard = RewardTrainer(model=model, args=args, train_dataset=data.dataset, processing_class=tokenizer)
    assert soft.soft_labels
    soft_batch = next(iter(soft.get_train_dataloader()))
    hard_batch = next(iter(hard.get_train_dataloader()))
    assert TARGET_COLUMN in soft_batch and TARGET_COLUMN not in hard_batch
    model.eval()
    with torch.no_grad():
        ours = soft.compute_loss(model, dict(soft_batch))
        theirs = hard.compute_loss(model, dict(hard_batch))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


# ----------------------------------------------------------------------------- the whole command


def test_a_preference_model_learns_the_judges_taste_and_stops_at_its_confidence(
    taste_run: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rm"
    args = ["train", "rm", "--data", str(taste_run), "--out", str(out), "--model", str(tiny_dir)]
    result = CliRunner().invoke(cli, [*args, "--heldout", "0.25", "--epochs", "3", *FAST])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "cai-train.json").read_text(encoding="utf-8"))
    held = record["evaluation"]["heldout"]
    assert held["pairs"] >= 25
    assert held["accuracy"] >= 0.9, held
    # soft labels of 0.8: the fitted probability stays near 0.8 instead of running to 1
    assert held["mean_target"] == pytest.approx(0.8)
    assert 0.65 <= held["mean_prob"] <= 0.9, held
    assert record["labels"] == "soft" and record["sources"] == [str(taste_run)]
    assert "held-out accuracy" in result.output and f"rm:{out}" in result.output
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "held out" in card and "Bradley-Terry" in card and "AutoModelForSequenceClassification" in card

    # cai judge-eval reports it as a judge, on comparisons of prompts it never saw
    comparisons = tmp_path / "unseen.jsonl"
    lines = []
    for i in range(20):
        chat = [{"role": "user", "content": f"Unseen question {i}: what about the {WORDS[i % len(WORDS)]}?"}]
        body = taste_reply(chat, SamplingParams()).split(". ", 1)[-1].removeprefix("Here is what I know: ")
        lines.append(
            {"prompt": chat[0]["content"], "chosen": f"Here is what I know: {body}", "rejected": f"{REFUSAL} {body}"}
        )
    comparisons.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    report = tmp_path / "judge.json"
    result = CliRunner().invoke(
        cli, ["judge-eval", str(comparisons), "--judge-model", f"rm:{out}", "--dtype", "float32", "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    (evaluation,) = json.loads(report.read_text(encoding="utf-8"))["evaluations"]
    assert evaluation["judge_model"] == f"rm:{out}" and evaluation["n"] == 20
    assert evaluation["accuracy"] >= 0.9, evaluation
    assert f"rm:{out}" in result.output


def test_sources_mix_and_human_decisions_count_as_sure_labels(taste_run: Path, tmp_path: Path) -> None:
    plain = _pairs_file(
        tmp_path,
        [
            {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."},
            {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
             "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]},
        ],
    )  # fmt: skip
    reviewed = tmp_path / "reviewed"
    source = load_from_disk(str(taste_run / "dataset"))["preferences"].select(range(3))
    human = ["human", "ai_judge", "ai_judge"]
    source.remove_columns(["label_source"]).add_column("label_source", human).save_to_disk(str(reviewed))
    data = reward_data([str(taste_run), str(plain), str(reviewed)], labels="soft", heldout=0)
    rows = data.dataset
    assert data.rows == data.total == len(load_from_disk(str(taste_run / "dataset"))["preferences"]) + 2 + 3
    by_source = [r for r in rows if r[SOURCE_COLUMN] == str(plain)]
    assert by_source[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert by_source[0]["chosen"] == [{"role": "assistant", "content": "Blue."}]
    assert by_source[1]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert [r[TARGET_COLUMN] for r in by_source] == [1.0, 1.0]  # unjudged rows are hard
    targets = [r[TARGET_COLUMN] for r in rows if r[SOURCE_COLUMN] == str(reviewed)]
    assert targets == [1.0, pytest.approx(0.8), pytest.approx(0.8)]  # the person's decision is sure
    assert any("pairs per source" in n for n in data.notes)


def test_the_heldout_part_is_a_seeded_choice_of_prompts(taste_run: Path) -> None:
    a = reward_data([str(taste_run)], heldout=0.3, seed=1)
    b = reward_data([str(taste_run)], heldout=0.3, seed=1)
    c = reward_data([str(taste_run)], heldout=0.3, seed=2)
    assert a.heldout is not None and b.heldout is not None and c.heldout is not None
    assert a.heldout["prompt"] == b.heldout["prompt"] and a.heldout["prompt"] != c.heldout["prompt"]
    train_prompts = {json.dumps(p) for p in a.dataset["prompt"]}
    assert not train_prompts & {json.dumps(p) for p in a.heldout["prompt"]}
    assert 0.15 < len(a.heldout) / (len(a.heldout) + a.rows) < 0.45


def test_hard_labels_train_through_trls_own_loss(taste_run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        kind="rm",
        sources=[str(taste_run)],
        out=tmp_path / "hard",
        model=str(tiny_dir),
        labels="hard",
        limit=16,
        heldout=0,
        overrides={"max_steps": 2, "per_device_train_batch_size": 4, "save_strategy": "no", "disable_tqdm": True},
    )
    result = train(options)
    assert result.steps == 2 and result.data.labels == "hard"
    assert TARGET_COLUMN not in result.data.dataset.column_names
    assert not any("labels/target_prob" in h for h in result.log_history)
    assert result.evaluation["heldout"] is None


def test_lora_preference_model_merges_into_a_plain_folder_the_scorer_loads(
    taste_run: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    from engine.backends.reward_model import load_reward_model

    out = tmp_path / "lora"
    args = ["train", "rm", "--data", str(taste_run), "--out", str(out), "--model", str(tiny_dir), "--lora"]
    result = CliRunner().invoke(cli, [*args, "--max-steps", "3", "--limit", "24", *FAST])
    assert result.exit_code == 0, result.output
    assert not (out / "adapter_config.json").exists()
    rm = load_reward_model(f"rm:{out}", dtype="float32", device="cpu")
    chat = [{"role": "user", "content": "Hi"}]
    first, second = rm.score([(chat, "Hello"), (chat, "Go away")])
    assert math.isfinite(first) and first != second


def test_resume_continues_from_the_last_checkpoint(taste_run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    base = ["train", "rm", "--data", str(taste_run), "--out", str(out), "--model", str(tiny_dir), "--limit", "16"]
    steps = ["--batch-size", "4", "--set", "disable_tqdm=true", "--save-steps", "2"]
    first = CliRunner().invoke(cli, [*base, *steps, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, [*base, *steps, "--max-steps", "4", "--resume"])
    assert again.exit_code == 0, again.output
    record = json.loads((out / "cai-train.json").read_text(encoding="utf-8"))
    assert record["steps"] == 4 and record["resumed_from"] and "checkpoint-2" in record["resumed_from"]


def _mismatch(tmp_path: Path) -> list[str]:
    rows = [{"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
             "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}]}]  # fmt: skip
    return ["--data", str(_pairs_file(tmp_path, rows))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda p: [], "Missing option '--data'"),
        (lambda p: ["--data", str(p / "missing.jsonl")], "no such file"),
        (lambda p: ["--data", str(_pairs_file(p, [{"prompt": "a", "answer": "b"}]))], "no 'chosen' or 'rejected'"),
        (_mismatch, "share every turn but the last"),
        (lambda p: ["--data", str(_pairs_file(p, [{"chosen": 3, "rejected": "x"}]))], "expected text or a list"),
        (lambda p: ["--data", str(p / "nothing")], "no such data folder"),
        (lambda p: ["--data", str(_pairs_file(p, [{"chosen": "a", "rejected": "b"}])), "--heldout", "1"], "--heldout"),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path: Path, args: Any, message: str) -> None:
    result = CliRunner().invoke(cli, ["train", "rm", "--out", str(tmp_path / "out"), *args(tmp_path)])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_margin_filter_that_drops_every_pair_is_an_error(taste_run: Path) -> None:
    with pytest.raises(TrainError, match="lower --min-margin"):
        reward_data([str(taste_run)], min_margin=0.9)


def test_help_names_the_sources_and_the_judge_it_becomes() -> None:
    result = CliRunner().invoke(cli, ["train", "rm", "--help"])
    assert result.exit_code == 0
    for phrase in ("Bradley-Terry", "JSONL", "hf:NAME", "rm:OUT", "--heldout", "Repeat"):
        assert phrase in result.output, phrase
    assert "rm " in CliRunner().invoke(cli, ["train", "--help"]).output


def test_an_empty_pairs_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    Dataset.from_list([{"chosen": "a", "rejected": "b"}]).select([]).to_json(str(empty))
    with pytest.raises(TrainError):
        reward_data([str(empty)])
