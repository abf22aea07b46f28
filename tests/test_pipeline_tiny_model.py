"""The whole pipeline on a tiny real model: generate, load the dataset, train DPO on it unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from engine.config import GenerateConfig
from engine.generate import generate
from tests.models import tiny_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    config = GenerateConfig(
        out=out,
        model=str(tiny_dir),
        prompts="mixed",
        limit=6,
        revisions=2,
        max_new_tokens=12,
        batch_size=4,
        chunk_size=4,
        temperature=0.0,
        min_margin=0.0,  # a random model's judge is nearly indifferent: keep every pair it can order
    )
    summary = generate(config, progress=False)
    assert summary.rows == 6
    return out


def test_dataset_loads_with_both_splits(run: Path) -> None:
    data = load_from_disk(str(run / "dataset"))
    assert set(data) == {"preferences", "sft"}
    assert len(data["sft"]) == 6
    assert len(data["preferences"]) >= 1
    pair = data["preferences"][0]
    assert pair["prompt"][-1]["role"] == "user"
    assert [m["role"] for m in pair["chosen"]] == ["assistant"] == [m["role"] for m in pair["rejected"]]
    assert "tiny-llama" in pair["policy_model"]


def test_dpo_trainer_takes_the_preferences_split_unchanged(run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    preferences = load_from_disk(str(run / "dataset"))["preferences"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        max_length=512,
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=preferences,
        processing_class=tokenizer,
    )
    result = trainer.train()
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "DPO training did not change any parameter"
