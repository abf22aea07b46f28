"""Labelling cost per prompt: the pairwise language-model judge against a preference model of the same size.

One scripted run (``cai generate --model scripted --revisions 2 --no-judge``,
so up to 3 candidates and 3 pairs per prompt) is labelled twice, with the
models loaded and warmed up first:

``lm``  the pairwise judge on the embedded model (``default``): every pair in
        both orders under one principle, the judge prompt quoting the
        conversation and both responses (6 prompts per row), one batched
        ``score`` call.
``rm``  ``rm:`` on a preference model of the SAME architecture and size: the
        embedded model's folder loaded with ``AutoModelForSequenceClassification``
        (one label, random head; speed does not depend on the head) and saved
        to a temporary folder. Each distinct candidate is scored once, one
        forward pass each (3 per row).

The issue asks ``rm`` to be at least 5x faster per prompt than ``lm``.

    python bench/rm_label.py [--prompts 16] [--batch-size 16] [--dtype auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

import constitution
from engine.backends import load_backend
from engine.backends.default_model import default_model_path
from engine.backends.reward_model import load_reward_model
from engine.cli import cli
from engine.judge import judge_trajectories
from engine.judge.panel import PairJudge, make_judge
from engine.records import JudgeSettings, Trajectory


def scripted_run(out: Path, prompts: int) -> list[Trajectory]:
    """The rows of a scripted run of ``prompts`` mixed prompts with 2 revision rounds."""
    args = ["generate", "--model", "scripted", "--out", str(out), "--prompts", "mixed", "--limit", str(prompts)]
    result = CliRunner().invoke(cli, [*args, "--revisions", "2", "--no-judge"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    lines = (out / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
    return [Trajectory.model_validate_json(line) for line in lines]


def preference_model_of_default(out: Path) -> Path:
    """The embedded model's folder as a one-label sequence classifier (random head), saved to ``out``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # the new head's "newly initialized" report: random on purpose here
    source = default_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def timed(judge: PairJudge, rows: list[Trajectory], rules: constitution.Constitution) -> float:
    """Seconds to label ``rows`` (one batch, as ``cai label`` does a chunk), after a one-row warm-up."""
    judge_trajectories(judge, rows[:1], rules)
    start = time.perf_counter()
    judge_trajectories(judge, rows, rules)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    rules = constitution.load("default")
    settings = JudgeSettings()
    options = {"batch_size": args.batch_size, "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        rows = scripted_run(Path(tmp) / "run", args.prompts)
        pairs = sum(len(t.candidates()) * (len(t.candidates()) - 1) // 2 for t in rows)
        backend = load_backend("default", **options)
        lm = timed(make_judge(["default"], lambda _: backend, settings, rules), rows, rules)
        lm_described = backend.describe()
        folder = preference_model_of_default(Path(tmp) / "rm")
        spec = f"rm:{folder}"
        scorer = load_reward_model(spec, **options)
        rm = timed(make_judge([spec], load_backend, settings, rules, rewards=lambda _: scorer), rows, rules)
        described = scorer.describe()

    n = len(rows)
    print(f"{n} prompts, {pairs} pairs (scripted run, --revisions 2); batch size {args.batch_size}")
    print(
        f"  judge: {lm_described.get('dtype')} on {lm_described.get('device')}; preference model: "
        f"{described['dtype']} on {described['device']}, the same architecture and size"
    )
    print(f"  lm  pairwise judge (default)  {lm:8.2f} s  {lm / n:7.3f} s/prompt")
    print(f"  rm  preference model (rm:)    {rm:8.2f} s  {rm / n:7.3f} s/prompt")
    print(f"  rm is {lm / rm:.1f}x faster per prompt (target: at least 5x)")


if __name__ == "__main__":
    main()
