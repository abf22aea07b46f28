"""Sycophancy probes of ``cai eval``: pushback, opinion steering, judge sycophancy (scripted models and judges)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.backends.base import Backend, Chat, ScoreRequest
from engine.backends.reward_model import Item
from engine.backends.scripted import ScriptedBackend, quoted_responses
from engine.cli import cli
from engine.config import EvalConfig
from engine.evaluate.probes.fact_check import FactItem, check_answer, load_facts, normalise
from engine.evaluate.probes.judge_sycophancy import load_judge_items
from engine.evaluate.probes.pushback import PUSHBACK_PATH, pushback_turn
from engine.evaluate.probes.steering import STEERING_PATH, steered_question
from engine.evaluate.report import Report, compare_reports, load_report
from engine.evaluate.run import evaluate

FACTS = {i.question: i for i in load_facts(PUSHBACK_PATH) + load_facts(STEERING_PATH)}
JUDGE_ITEMS = load_judge_items()
AGREEING = {i.agreeing for i in JUDGE_ITEMS}
CORRECT = {i.correct for i in JUDGE_ITEMS}


def _item(chat: Chat) -> FactItem | None:
    """The probe question a conversation asks (None for the red-team and benign prompts)."""
    first = chat[0]["content"]
    return next((item for question, item in FACTS.items() if first.endswith(question)), None)


def policy(*, caves: bool = False, follows: bool = False, hedges: bool = False) -> Callable[[Chat, Any], str]:
    """A scripted model: right answers, unless it caves to pushback, follows a stated view, or hedges."""

    def reply(chat: Chat, params: Any) -> str:
        item = _item(chat)
        if item is None:
            return "Here is a helpful and careful answer."
        last = chat[-1]["content"]
        if len(chat) == 3 and last == pushback_turn(item):
            if hedges:
                return f"It is {item.answer[0]}, not {item.wrong[0]}."
            return f"You're right, my apologies: it's {item.wrong[0]}." if caves else f"Yes: {item.answer[0]}."
        if last == steered_question(item) and follows:
            return f"Yes, the answer is {item.wrong[0]}."
        return f"The answer is {item.answer[0]}."

    return reply


def judge_scores(prefers_agreeing: bool | None) -> Callable[[ScoreRequest], list[float]]:
    """A judge: uniform pointwise; pairwise it prefers the agreeing response (or the correct one, or neither)."""

    def scores(request: ScoreRequest) -> list[float]:
        quoted = quoted_responses(request.chat[-1]["content"])
        if request.options == ("(Yes)", "(No)") or set(quoted) != {"A", "B"} or prefers_agreeing is None:
            return [math.log(0.5)] * len(request.options)
        liked = AGREEING if prefers_agreeing else CORRECT
        p_a = 0.9 if quoted["A"] in liked else (0.1 if quoted["B"] in liked else 0.5)
        return [math.log(p_a), math.log(1.0 - p_a)]

    return scores


def factory(models: dict[str, ScriptedBackend], judge: ScriptedBackend | None = None) -> Callable[..., Backend]:
    judge = judge or ScriptedBackend(scores=judge_scores(prefers_agreeing=None), name="judge")

    def load(spec: str, **_: Any) -> Backend:
        return judge if spec == "judge" else models[spec]

    return load


def config(tmp_path: Path, models: list[str], **fields: Any) -> EvalConfig:
    values: dict[str, Any] = {
        "out": tmp_path / "eval",
        "models": models,
        "judge_model": "judge",
        "limit": 2,
        "classifier": False,
        "jailbreaks": 0,
        "counterfactual": 0,
        "robustness": 0,
        "sycophancy": 24,
    }
    return EvalConfig(**(values | fields))


def run(tmp_path: Path, models: dict[str, ScriptedBackend], **fields: Any) -> Report:
    return evaluate(config(tmp_path, list(models), **fields), progress=False, backends=factory(models)).report


# ---------------------------------------------------------------- the checker


def test_the_checker_reads_which_answer_a_reply_gives() -> None:
    thirty = (("30", "thirty"), ("31", "thirty-one"))
    assert check_answer("September has 30 days.", *thirty) == "correct"
    assert check_answer("September has thirty-one days.", *thirty) == "wrong"  # not also 'thirty'
    assert check_answer("It has 30 days, not 31.", *thirty) == "ambiguous"  # both named: never correct
    assert check_answer("I am not sure.", *thirty) == "unclear"
    assert check_answer("Some 300 days", *thirty) == "unclear"  # whole words only
    assert check_answer("The capital is BRASÍLIA!", ("Brasilia",), ("Sao Paulo",)) == "correct"
    assert check_answer("Water is H₂O.", ("H2O",), ("CO2",)) == "correct"
    assert check_answer("A millennium: 1,000 years.", ("100",), ("1000",)) == "wrong"
    assert check_answer("Au, from aurum; audio is unrelated", ("Au",), ("Ag",)) == "correct"
    assert normalise("Fifty-Six!") == "fifty six"


def test_builtin_sets_are_well_formed_and_checkable() -> None:
    pushback, steering = load_facts(PUSHBACK_PATH), load_facts(STEERING_PATH)
    for items in (pushback, steering, JUDGE_ITEMS):
        assert 20 <= len(items) <= 30
        assert len({i.id for i in items}) == len(items)
        assert len({i.category for i in items}) >= 4
    assert not {i.id for i in pushback} & {i.id for i in steering}
    assert not {i.question for i in pushback} & {i.question for i in steering}
    for item in pushback + steering:
        assert {normalise(s) for s in item.answer}.isdisjoint(normalise(s) for s in item.wrong)
        for spelling in item.answer:
            assert item.check(f"It is {spelling}.") == "correct", (item.id, spelling)
        for spelling in item.wrong:
            assert item.check(f"It is {spelling}.") == "wrong", (item.id, spelling)
        assert item.check(item.question) == "unclear", item.id  # the question gives neither answer away
    for judged in JUDGE_ITEMS:
        assert judged.agreeing != judged.correct


def test_malformed_sets_are_refused(tmp_path: Path) -> None:
    row = {"id": "x-1", "category": "dates", "question": "Q?", "answer": ["1945"], "wrong": ["1944"]}
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"facts\.jsonl:2: id .x-1. already used on line 1"):
        load_facts(path)
    path.write_text(json.dumps(row | {"wrong": ["1,945"]}) + "\n")
    with pytest.raises(ValueError, match="both the answer and the wrong answer"):
        load_facts(path)
    path.write_text(json.dumps(row | {"answer": []}) + "\n")
    with pytest.raises(ValueError, match="answer must be a non-empty list"):
        load_facts(path)


# ---------------------------------------------------------------- the models' rates


def test_a_model_that_always_caves_scores_full_pushback_and_one_that_never_does_zero(tmp_path: Path) -> None:
    models = {
        "caves": ScriptedBackend(reply=policy(caves=True), name="caves"),
        "firm": ScriptedBackend(reply=policy(), name="firm"),
    }
    report = run(tmp_path, models)
    caves, firm = report.model("caves").pushback, report.model("firm").pushback
    assert caves is not None and firm is not None
    assert caves.rate.value == 1.0 and caves.rate.n == caves.items == 24
    assert firm.rate.value == 0.0 and firm.rate.n == 24
    assert firm.ambiguous == firm.unclear == firm.skipped == 0
    for row in (caves, firm):
        assert row.rate.low <= row.rate.value <= row.rate.high and row.rate.confidence == 0.95
    assert report.model("caves").steering is not None and report.model("caves").steering.rate.value == 0.0
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["models"][0]["pushback"]["rate"]["value"] == 1.0
    assert set(saved["models"][0]["pushback"]) >= {"items", "ambiguous", "unclear", "skipped"}
    html = (tmp_path / "eval" / "report.html").read_text()
    assert 'id="sycophancy-table"' in html and "pushback" in html


def test_a_model_that_follows_the_stated_view_scores_full_steering(tmp_path: Path) -> None:
    models = {
        "follows": ScriptedBackend(reply=policy(follows=True), name="follows"),
        "firm": ScriptedBackend(reply=policy(), name="firm"),
    }
    report = run(tmp_path, models, sycophancy=6)
    follows, firm = report.model("follows").steering, report.model("firm").steering
    assert follows is not None and firm is not None
    assert follows.rate.value == 1.0 and follows.rate.n == 6
    assert firm.rate.value == 0.0
    assert "steering" in compare_reports(report, report)


def test_hedged_and_wrong_first_answers_are_counted_apart(tmp_path: Path) -> None:
    models = {
        "hedges": ScriptedBackend(reply=policy(hedges=True), name="hedges"),
        "wrong": ScriptedBackend(reply=lambda chat, params: "I have no idea, sorry.", name="wrong"),
    }
    report = run(tmp_path, models, sycophancy=5)
    hedges, wrong = report.model("hedges").pushback, report.model("wrong").pushback
    assert hedges is not None and wrong is not None
    assert hedges.ambiguous == 5 and hedges.rate is None
    assert wrong.skipped == 5 and wrong.rate is None
    assert load_report(tmp_path / "eval") == report  # no NaN: a probe that counted nothing has no rate


# ---------------------------------------------------------------- the judge


@pytest.mark.parametrize(("prefers_agreeing", "expected"), [(True, 1.0), (False, 0.0)])
def test_judge_sycophancy_rate(tmp_path: Path, prefers_agreeing: bool, expected: float) -> None:
    judge = ScriptedBackend(scores=judge_scores(prefers_agreeing), name="judge")
    models = {"firm": ScriptedBackend(reply=policy(), name="firm")}
    report = evaluate(config(tmp_path, ["firm"], sycophancy=7), progress=False, backends=factory(models, judge)).report
    row = report.judge_sycophancy
    assert row is not None and row.probe == "judge_sycophancy"
    assert row.rate.value == expected and row.rate.n == row.items == 7 and row.skipped == 0
    assert 'id="judge-sycophancy-table"' in (tmp_path / "eval" / "report.html").read_text()


def test_a_preference_model_judge_is_probed_too(tmp_path: Path) -> None:
    class Agreeable:
        name = "rm:agreeable"

        def score(self, items: Sequence[Item]) -> list[float]:
            return [1.0 if response in AGREEING else 0.0 for _, response in items]

    models = {"firm": ScriptedBackend(reply=policy(), name="firm")}
    report = evaluate(
        config(tmp_path, ["firm"], judge_model="rm:agreeable", sycophancy=3),
        progress=False,
        backends=factory(models),
        rewards=lambda spec, **_: Agreeable(),
    ).report
    assert report.judge_sycophancy is not None and report.judge_sycophancy.rate.value == 1.0


# ---------------------------------------------------------------- gates, resume, off


def test_fail_over_gates_the_sycophancy_rates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.evaluate.run as run_module

    judge = ScriptedBackend(scores=judge_scores(prefers_agreeing=True), name="judge")
    models = {"caves": ScriptedBackend(reply=policy(caves=True), name="caves")}
    real = run_module.evaluate
    monkeypatch.setattr(
        run_module, "evaluate", lambda cfg, **_: real(cfg, progress=False, backends=factory(models, judge))
    )
    runner = CliRunner()
    args = ["eval", "--model", "caves", "--judge-model", "judge", "--no-classifier", "--limit", "2", "-o"]
    base = [*args, str(tmp_path / "a"), "--jailbreaks", "0", "--counterfactual", "0", "--robustness", "0"]
    result = runner.invoke(cli, [*base, "--sycophancy", "3", "--fail-over", "pushback=0.3"])
    assert result.exit_code == 3, result.output
    assert "caves: pushback 1.000 > 0.3" in result.output and "steering" not in result.output.split("failed")[1]
    result = runner.invoke(cli, [*base, "--sycophancy", "3", "--fail-over", "steering=0.3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*base, "--sycophancy", "3", "--fail-over", "judge_sycophancy=0.5"])
    assert result.exit_code == 3 and "judge judge: judge_sycophancy 1.000 > 0.5" in result.output
    result = runner.invoke(cli, [*base, "--fail-under", "pushback=0.3"])
    assert result.exit_code == 2 and "use --fail-over" in result.output
    off = [*args, str(tmp_path / "b"), "--sycophancy", "0", "--fail-over", "pushback=0.3"]
    result = runner.invoke(cli, off)
    assert result.exit_code == 3 and "pushback not measured" in result.output


def test_resume_does_not_ask_again(tmp_path: Path) -> None:
    calls = {"n": 0}
    base = policy(caves=True)

    def flaky(chat: Chat, params: Any) -> str:
        calls["n"] += 1
        if len(chat) == 3 and calls["n"] > 90:  # 4 answers, 72 first turns, then 14 pushbacks
            raise KeyboardInterrupt
        return base(chat, params)

    backend = ScriptedBackend(reply=flaky, name="flaky")
    settings = config(tmp_path, ["flaky"], chunk_size=4, sycophancy=24)
    with pytest.raises(KeyboardInterrupt):
        evaluate(settings, progress=False, backends=factory({"flaky": backend}))
    log = next((tmp_path / "eval" / "sycophancy").glob("*.jsonl"))
    kept = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert len(kept) == 84 and all(k.endswith(("~first", "~neutral", "~steered")) for k in kept[:72])
    calls["n"] = -10_000  # no more interruptions
    summary = evaluate(settings, progress=False, backends=factory({"flaky": backend}))
    ids = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 96
    assert summary.probed == 96 - len(kept) and summary.generated == 0
    assert summary.report.model("flaky").pushback is not None
    assert summary.report.model("flaky").pushback.rate.value == 1.0
    again = evaluate(settings, progress=False, backends=factory({"flaky": backend}))
    assert again.generated == again.probed == 0


def test_sycophancy_zero_asks_nothing(tmp_path: Path) -> None:
    backend = ScriptedBackend(reply=policy(), name="firm")
    report = run(tmp_path, {"firm": backend}, sycophancy=0)
    assert report.model("firm").pushback is None and report.model("firm").steering is None
    assert report.judge_sycophancy is None
    assert not any((tmp_path / "eval" / "sycophancy").iterdir())
    assert sum(backend.calls) == load_report(tmp_path / "eval").model("firm").answers == 4  # red-team, benign only


def test_the_sycophancy_tables_escape_what_they_print(tmp_path: Path) -> None:
    from engine.evaluate.html import render_html

    name = '<img src=x onerror="alert(1)">'
    report = run(tmp_path, {name: ScriptedBackend(reply=policy(caves=True), name="x")}, sycophancy=2)
    page = render_html(report)
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert page.count("<code>pushback</code>") == 1 and "<code>steering</code>" in page
