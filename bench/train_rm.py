"""`cai train rm`: its speed against TRL's RewardTrainer called directly, and where soft labels stop.

Speed (target: ``cai train rm`` steps/s within 10% of TRL's trainer on the same batches)
    The embedded model's architecture (SmolLM2-135M with a scalar head), the
    same pairs, the same TRL config: ``engine.train.train`` with soft labels
    (our subclass, our loss) against ``trl.RewardTrainer`` with the pairs as
    hard labels, alternating, each run ``--steps`` optimizer steps; the
    ratio of the median steps/s is printed. Model loading is outside the
    timed ``train()`` in both.

Fit
    On the tiny random model: pairs whose judge probability is 0.6, 0.7, 0.8
    or 0.9 (a quarter each), trained with ``--labels soft`` and ``--labels
    hard``; the table gives the mean fitted P(chosen) = s(r_chosen - r_rejected)
    per label level on the training pairs. Soft labels should stop near each
    level, hard ones run past them.

    python bench/train_rm.py [--part speed|fit|both] [--steps 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = ["apples", "boats", "chess", "drums"]
WORDS = ["river", "stone", "lamp", "garden", "window", "coffee", "paper", "music", "bridge", "cloud", "table"]


def pairs(n: int, levels: tuple[float, ...] = (0.8,)) -> Any:
    """n preference pairs in TRL's conversational shape: the chosen answer helps, the rejected one refuses."""
    from datasets import Dataset

    rows = []
    for i in range(n):
        body = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(4 + i % 5))
        level = i % len(levels)
        prob, topic = levels[level], TOPICS[level]  # the topic tells the model how sure the judge was
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Question {i}: tell me about {topic}."}],
                "chosen": [{"role": "assistant", "content": f"About {topic}: {body}."}],
                "rejected": [{"role": "assistant", "content": f"About {topic}: I'm sorry, but I can't help. {body}"}],
                "chosen_prob": prob,
                "margin": 2 * prob - 1,
            }
        )
    return Dataset.from_list(rows)


def config_fields(steps: int) -> dict[str, Any]:
    return {
        "max_steps": steps,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-5,
        "max_length": 256,
        "gradient_checkpointing": False,
        "logging_steps": steps,
        "save_strategy": "no",
        "disable_tqdm": True,
        "report_to": "none",
        "seed": 0,
    }


def ours(data: Path, model: str, out: Path, steps: int) -> float:
    from engine.train import TrainOptions, train

    fields = config_fields(steps)
    result = train(
        TrainOptions(kind="rm", sources=[str(data)], out=out, model=model, heldout=0, labels="soft", overrides=fields)
    )
    return result.steps / result.metrics["train_runtime"]


def theirs(data: Path, model: str, out: Path, steps: int) -> float:
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from engine.train.preflight import run_defaults

    dataset = load_from_disk(str(data)).remove_columns(["chosen_prob", "margin"])
    args = RewardConfig(**{**run_defaults(out), **config_fields(steps)})
    tokenizer = AutoTokenizer.from_pretrained(model)
    set_seed(0)
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
    net.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(model=net, args=args, train_dataset=dataset, processing_class=tokenizer)
    output = trainer.train()
    return output.global_step / output.metrics["train_runtime"]


def speed(steps: int, repeats: int) -> None:
    from engine.backends.default_model import default_model_path

    model = str(default_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs"
        pairs(4 * steps).save_to_disk(str(data))
        rates: dict[str, list[float]] = {"cai train rm": [], "trl RewardTrainer": []}
        for i in range(repeats):
            for name, run in (("cai train rm", ours), ("trl RewardTrainer", theirs)):
                rate = run(data, model, Path(tmp) / f"{name.split()[0]}-{i}", steps)
                rates[name].append(rate)
                print(f"repeat {i + 1}, {name}: {rate:.3f} steps/s", flush=True)
    a, b = statistics.median(rates["cai train rm"]), statistics.median(rates["trl RewardTrainer"])
    print(f"median steps/s: cai train rm {a:.3f}, TRL RewardTrainer {b:.3f}; ratio {a / b:.3f} (target at least 0.90)")


def fit() -> None:
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.train import TrainOptions, train
    from tests.models import tiny_model_dir

    levels = (0.6, 0.7, 0.8, 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = tiny_model_dir(Path(tmp))
        data = Path(tmp) / "pairs"
        pairs(64, levels).save_to_disk(str(data))
        table: dict[str, dict[float, float]] = {}
        for labels in ("soft", "hard"):
            out = Path(tmp) / labels
            fields = {**config_fields(120), "learning_rate": 1e-3, "per_device_train_batch_size": 8}
            train(
                TrainOptions(
                    kind="rm", sources=[str(data)], out=out, model=str(tiny), heldout=0, labels=labels, overrides=fields
                )
            )
            tokenizer = AutoTokenizer.from_pretrained(str(out))
            model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
            rows = load_from_disk(str(data))
            fitted: dict[float, list[float]] = {level: [] for level in levels}
            with torch.no_grad():
                for row in rows:
                    scores = []
                    for side in ("chosen", "rejected"):
                        ids = tokenizer.apply_chat_template(row["prompt"] + row[side], return_tensors="pt")
                        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
                        scores.append(model(input_ids=ids).logits.item())
                    fitted[row["chosen_prob"]].append(torch.sigmoid(torch.tensor(scores[0] - scores[1])).item())
            table[labels] = {level: statistics.mean(values) for level, values in fitted.items()}
    print("\njudge's P(chosen) | fitted P(chosen), --labels soft | fitted P(chosen), --labels hard")
    for level in levels:
        print(f"{level:17.1f} | {table['soft'][level]:30.3f} | {table['hard'][level]:30.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "fit", "both"], default="both")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.part in ("speed", "both"):
        speed(args.steps, args.repeats)
    if args.part in ("fit", "both"):
        fit()


if __name__ == "__main__":
    main()
