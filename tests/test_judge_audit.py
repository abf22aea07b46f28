"""`cai judge-eval` as an audit: several judges, their agreement, intervals on known cases, the HTML page."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import engine.backends
from engine.backends.base import Backend, ScoreRequest
from engine.backends.scripted import ScriptedBackend, quoted_responses
from engine.cli import cli


def slot(prompt: str, letter: str) -> str:
    """The text quoted as response (A) or (B) in a judge prompt."""
    return quoted_responses(prompt)[letter]


def prefers(texts: set[str], confidence: float) -> Callable[[ScoreRequest], list[float]]:
    """A judge that prefers the responses in ``texts``, the same in both orders."""

    def scores(request: ScoreRequest) -> list[float]:
        a_better = slot(request.chat[-1]["content"], "A") in texts
        high, low = math.log(confidence), math.log(1 - confidence)
        return [high, low] if a_better else [low, high]

    return scores


def install(monkeypatch: pytest.MonkeyPatch, judges: dict[str, Callable[[ScoreRequest], list[float]]]) -> None:
    def load(spec: str = "default", **_: object) -> Backend:
        return ScriptedBackend(scores=judges[spec], name=spec)

    monkeypatch.setattr(engine.backends, "load_backend", load)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["judge-eval", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def eight_items(tmp_path: Path) -> Path:
    path = tmp_path / "eight.jsonl"
    rows = [
        {"id": f"i{n}", "prompt": f"question {n}", "chosen": f"good {n}", "rejected": f"bad {n}"} for n in range(1, 9)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_judges_report_kappa_alpha_and_where_each_is_right(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Judge one is right on items 1-6, judge two on 1-4 and 7 (H: agrees with the human label, O: does not):
    #   one: H H H H H H O O      two: H H H H O O H O
    # Cohen's kappa: observed agreement 5/8 (items 1-4, 8); one says H 6/8, two 5/8;
    #   expected 6/8*5/8 + 2/8*3/8 = 36/64; kappa = (40/64 - 36/64) / (1 - 36/64) = 4/28 = 1/7.
    # Krippendorff's alpha (nominal, 2 coders, 8 units): coincidences o_HH = 8, o_OO = 2, o_HO = o_OH = 3;
    #   n_H = 11, n_O = 5, n = 16; alpha = 1 - (n - 1) * 6 / (2 * n_H * n_O) = 1 - 90/110 = 2/11.
    # Mean probability (one at 0.8, two at 0.9): items 1-4 right; 5, 6: (0.8 + 0.1)/2 < 0.5 wrong;
    #   7: (0.2 + 0.9)/2 > 0.5 right; 8 wrong: 5 of 8. Majority: 1-4 right, 5-7 split (wrong), 8 wrong: 4.
    path = eight_items(tmp_path)
    one = {f"good {n}" for n in range(1, 7)} | {"bad 7", "bad 8"}
    two = {f"good {n}" for n in (1, 2, 3, 4, 7)} | {"bad 5", "bad 6", "bad 8"}
    install(monkeypatch, {"one": prefers(one, 0.8), "two": prefers(two, 0.9)})
    out = tmp_path / "r.json"
    code, stdout, stderr = run(str(path), "--judge-model", "one", "--judge-model", "two", "--json", str(out))
    assert code == 0, stderr
    report = json.loads(out.read_text())
    first, second = report["evaluations"]
    assert (first["judge_model"], first["correct"]) == ("one", 6)
    assert (second["judge_model"], second["correct"]) == ("two", 5)
    agreement = report["agreements"]["ours"]
    assert agreement["alpha"] == pytest.approx(2 / 11)
    (pair,) = agreement["pairs"]
    assert pair["kappa"] == pytest.approx(1 / 7)
    assert (pair["agree"], pair["voted"]) == (5, 8)
    assert (pair["both_right"], pair["first_only"], pair["second_only"], pair["both_wrong"]) == (4, 2, 1, 1)
    assert agreement["mean_correct"] == 5 and agreement["majority_correct"] == 4
    assert agreement["disagreed"] == ["i5", "i6", "i7"]
    assert "Cohen's kappa 0.143" in stdout and "Krippendorff's alpha 0.182" in stdout


def test_a_coin_flip_judge_on_400_items_is_not_above_chance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    rows = [{"prompt": f"q{n}", "chosen": f"good {n}", "rejected": f"bad {n}"} for n in range(400)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    coin = random.Random(0)
    luck = {text for n in range(400) for text in [f"good {n}" if coin.random() < 0.5 else f"bad {n}"]}
    install(monkeypatch, {"coin": prefers(luck, 0.7)})
    out = tmp_path / "r.json"
    code, stdout, _ = run(str(path), "--judge-model", "coin", "--json", str(out))
    assert code == 0
    (evaluation,) = json.loads(out.read_text())["evaluations"]
    assert 0.4 < evaluation["accuracy"] < 0.6 and evaluation["at_chance"] and evaluation["interval"][0] <= 0.5
    assert "NOT SHOWN BETTER THAN CHANCE" in stdout
    # the same judge made right on 300 of them is above chance
    right = {f"good {n}" for n in range(300)} | {f"bad {n}" for n in range(300, 400)}
    install(monkeypatch, {"better": prefers(right, 0.7)})
    code, stdout, _ = run(str(path), "--judge-model", "better", "--json", str(out))
    (evaluation,) = json.loads(out.read_text())["evaluations"]
    assert evaluation["accuracy"] == 0.75 and not evaluation["at_chance"] and evaluation["interval"][0] > 0.7


def test_the_report_gives_calibration_and_coverage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = eight_items(tmp_path)
    install(monkeypatch, {"one": prefers({f"good {n}" for n in range(1, 7)} | {"bad 7", "bad 8"}, 0.8)})
    out = tmp_path / "r.json"
    code, stdout, _ = run(str(path), "--judge-model", "one", "--json", str(out), "--min-margin", "0.5")
    assert code == 0
    (e,) = json.loads(out.read_text())["evaluations"]
    # p(human choice) is 0.8 on six items and 0.2 on two: Brier = (6 * 0.04 + 2 * 0.64) / 8 = 0.19.
    assert e["brier"] == pytest.approx(0.19)
    # mirrored points: 0.8 (six True, two False) and 0.2 (six False, two True): each bin off by |0.8 - 0.75|.
    assert e["ece"] == pytest.approx(0.05)
    assert e["kept"] == 8 and e["kept_correct"] == 6  # margin 0.6 >= 0.5 everywhere
    at = {p["min_margin"]: p for p in e["coverage"]}
    assert at[0.6]["kept"] == 8 and at[0.8]["kept"] == 0
    assert "calibration: Brier 0.190" in stdout and "accuracy vs coverage" in stdout


PUBLISHED = Path(__file__).resolve().parent / "data" / "published"


def test_a_published_response_file_is_scored_by_both_protocols(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, {"s": lambda request: [0.0] * len(request.options)})
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    path = PUBLISHED / "hhh_two_options.jsonl"
    code, stdout, stderr = run(str(path), "--judge-model", "s", "--json", str(out), "--html", str(page))
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [e["protocol"] for e in report["evaluations"]] == ["ours", "as-written"]
    assert set(report["protocols"]) == {"ours", "as-written"}
    assert "protocol ours:" in stdout.replace("judge s, ", "") and "protocol as-written:" in stdout
    assert report["evaluations"][0]["n"] == report["evaluations"][1]["n"] == 6
    assert page.read_text().startswith("<!DOCTYPE html>") and f"wrote {page}" in stderr
    code, _, stderr = run(str(path), "--judge-model", "s", "--protocol", "ours", "--json", str(out))
    assert code == 0 and [e["protocol"] for e in json.loads(out.read_text())["evaluations"]] == ["ours"]


def test_a_category_file_is_scored_as_written_only_and_refused_by_ours(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install(monkeypatch, {"s": lambda request: [0.0] * len(request.options)})
    out = tmp_path / "r.json"
    path = PUBLISHED / "harm_categories.jsonl"
    code, _, stderr = run(str(path), "--judge-model", "s", "--json", str(out))
    assert code == 0, stderr
    report = json.loads(out.read_text())
    (evaluation,) = report["evaluations"]
    assert evaluation["protocol"] == "as-written" and evaluation["chance"] < 0.5
    assert evaluation["ece"] is None and evaluation["coverage"] == []  # no soft pairwise label with nine options
    assert "scored as written only" in report["notes"][0]
    code, _, stderr = run(str(path), "--judge-model", "s", "--protocol", "ours")
    assert code == 1 and "the options of this file are not responses" in stderr and "--protocol as-written" in stderr


def test_as_written_needs_a_published_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, {"s": lambda request: [0.0] * len(request.options)})
    code, _, stderr = run(str(eight_items(tmp_path)), "--judge-model", "s", "--protocol", "as-written")
    assert code == 1 and "needs a published multiple-choice file" in stderr
