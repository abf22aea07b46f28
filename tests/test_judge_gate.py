"""The judge gate of `cai generate` and `cai label`: the check, its record, its warning, its refusal, its reuse."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import engine.backends
from engine.audit.comparisons import load_comparisons
from engine.audit.gate import BUILTIN_CHECK_ITEMS, check_items
from engine.backends.base import Backend, ScoreRequest
from engine.backends.scripted import ScriptedBackend, longer_is_better, quoted_responses
from engine.cli import cli

SHIPPED = load_comparisons("builtin")
BETTER = {(c.response_a if c.better == "A" else c.response_b) for c in SHIPPED}


def slot(prompt: str, letter: str) -> str:
    """The text quoted as response (A) or (B) in a judge prompt."""
    return quoted_responses(prompt)[letter]


def knows_the_shipped_answers(request: ScoreRequest) -> list[float]:
    """Right on every shipped comparison; on a run's own pairs it falls back to a stable taste."""
    text = request.chat[-1]["content"]
    a, b = slot(text, "A"), slot(text, "B")
    if a in BETTER or b in BETTER:
        return [math.log(0.9), math.log(0.1)] if a in BETTER else [math.log(0.1), math.log(0.9)]
    return longer_is_better(request)


def always_a(request: ScoreRequest) -> list[float]:
    return [math.log(0.9), math.log(0.1)]


class Counting:
    """Backends made by the fake loader, to count the judge's score calls."""

    def __init__(self, scores: Callable[[ScoreRequest], list[float]]) -> None:
        self.scores = scores
        self.scored = 0

    def load(self, spec: str = "default", **_: object) -> Backend:
        counter = self

        class Backend_(ScriptedBackend):
            def score(self, requests):  # type: ignore[no-untyped-def]
                counter.scored += len(requests)
                return super().score(requests)

        return Backend_(scores=self.scores, name=f"scripted-{spec}")


@pytest.fixture
def judge(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[ScoreRequest], list[float]]], Counting]:
    def install(scores: Callable[[ScoreRequest], list[float]]) -> Counting:
        counting = Counting(scores)
        monkeypatch.setattr(engine.backends, "load_backend", counting.load)
        return counting

    return install


def generate(out: Path, *args: str) -> tuple[int, str, str]:
    command = ["generate", "--out", str(out), "--model", "scripted", "--limit", "4", "--revisions", "1", *args]
    result = CliRunner().invoke(cli, command)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_builtin_check_is_a_fixed_sample_spread_over_categories() -> None:
    first, again = check_items("builtin"), check_items("builtin")
    assert len(first) == BUILTIN_CHECK_ITEMS and [c.id for c in first] == [c.id for c in again]
    assert len({c.category for c in first}) >= 12
    assert len(check_items("builtin", 10)) == 10


def test_a_guessing_judge_is_warned_about_and_recorded(judge: Callable[..., Counting], tmp_path: Path) -> None:
    judge(always_a)
    code, stdout, stderr = generate(tmp_path / "run")
    assert code == 0, stderr
    check = json.loads((tmp_path / "run" / "labels.json").read_text())["check"]
    assert check["source"] == "builtin" and check["items"] == BUILTIN_CHECK_ITEMS
    assert check["correct"] == 0 and check["position_bias_rate"] == 1.0 and check["low"] == 0.0
    assert f"!! WARNING: judge check: right on 0 of {BUILTIN_CHECK_ITEMS}" in stderr
    assert "NOT shown to be better than a coin" in stderr and "it is guessing" in stderr
    assert (
        f"judge check: right on 0 of {BUILTIN_CHECK_ITEMS}" in stdout
    )  # said again at the end, after the progress bars
    card = (tmp_path / "run" / "README.md").read_text()
    assert "## How good is the judge?" in card and "**Warning: the judge is NOT shown to be better" in card


def test_a_good_judge_passes_quietly_and_its_check_is_reused_on_resume(
    judge: Callable[..., Counting], tmp_path: Path
) -> None:
    counting = judge(knows_the_shipped_answers)
    code, stdout, stderr = generate(tmp_path / "run")
    assert code == 0, stderr
    assert "WARNING" not in stderr and f"judge check: right on {BUILTIN_CHECK_ITEMS} of {BUILTIN_CHECK_ITEMS}" in stdout
    check = json.loads((tmp_path / "run" / "labels.json").read_text())["check"]
    assert check["accuracy"] == 1.0 and check["low"] > 0.8 and check["position_bias_rate"] == 0.0
    assert "above chance" in (tmp_path / "run" / "README.md").read_text()
    before = counting.scored
    code, _, stderr = generate(tmp_path / "run", "--limit", "6")  # two more prompts: the judge labels them
    assert code == 0, stderr
    assert "checked earlier, in labels.json" in stderr
    assert counting.scored - before < 2 * BUILTIN_CHECK_ITEMS  # the checked comparisons were not judged again
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["check"] == check


def test_required_accuracy_refuses_before_anything_is_written(judge: Callable[..., Counting], tmp_path: Path) -> None:
    judge(always_a)
    code, _, stderr = generate(tmp_path / "run", "--require-judge-accuracy", "0.7")
    assert code == 3
    assert "--require-judge-accuracy 0.7 refuses to label with it" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "labels.json").exists()


def test_no_check_is_recorded_as_unchecked(judge: Callable[..., Counting], tmp_path: Path) -> None:
    counting = judge(always_a)
    code, _, stderr = generate(tmp_path / "run", "--judge-check", "none")
    assert code == 0 and "judge check" not in stderr
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["check"] is None
    assert "was not checked on labelled comparisons" in (tmp_path / "run" / "README.md").read_text()
    assert counting.scored > 0
    code, _, stderr = generate(tmp_path / "run2", "--judge-check", "none", "--require-judge-accuracy", "0.5")
    assert code == 1 and "error: --require-judge-accuracy: Value error, needs a judge check" in stderr


def test_a_check_file_of_ones_own(judge: Callable[..., Counting], tmp_path: Path) -> None:
    judge(knows_the_shipped_answers)
    mine = tmp_path / "mine.jsonl"
    rows = [
        {"prompt": c.conversation, "response_a": c.response_a, "response_b": c.response_b, "better": c.better}
        for c in SHIPPED[:12]
    ]
    mine.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, stderr = generate(tmp_path / "run", "--judge-check", str(mine))
    assert code == 0, stderr
    check = json.loads((tmp_path / "run" / "labels.json").read_text())["check"]
    assert check["source"] == str(mine) and check["items"] == 12 and check["correct"] == 12
    code, _, stderr = generate(tmp_path / "run2", "--judge-check", str(tmp_path / "nope.jsonl"))
    assert code == 1 and f"{tmp_path / 'nope.jsonl'}: no such file" in stderr
    assert not (tmp_path / "run2" / "run.json").exists()


def test_label_checks_the_judge_too(judge: Callable[..., Counting], tmp_path: Path) -> None:
    judge(knows_the_shipped_answers)
    code, _, stderr = generate(tmp_path / "run", "--no-judge")
    assert code == 0, stderr
    judge(always_a)
    result = CliRunner().invoke(cli, ["label", str(tmp_path / "run"), "--require-judge-accuracy", "0.6"])
    assert result.exit_code == 3 and "refuses to label" in result.stderr
    assert not (tmp_path / "run" / "labels.json").exists()
    result = CliRunner().invoke(cli, ["label", str(tmp_path / "run"), "--judge-check-limit", "8"])
    assert result.exit_code == 0, result.stderr
    assert "!! WARNING: judge check: right on 0 of 8" in result.stderr
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["check"]["items"] == 8
    result = CliRunner().invoke(
        cli, ["label", str(tmp_path / "run"), "--judge-check", "none", "--require-judge-accuracy", "0.5"]
    )
    assert result.exit_code == 2 and "needs a judge check" in result.stderr
