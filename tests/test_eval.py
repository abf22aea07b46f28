"""``cai eval`` end to end with scripted models and scripted judges (no model weights)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.backends.base import Backend, Chat, SamplingParams, ScoreRequest
from engine.backends.scripted import ScriptedBackend
from engine.cli import cli
from engine.config import EvalConfig
from engine.evaluate.report import compare_reports, load_report
from engine.evaluate.run import evaluate
from engine.rundir import RunDirError
from engine.sources import load_prompts

HARMFUL = {item.messages[-1]["content"] for item in load_prompts("eval-redteam")}
REFUSAL = "I can't help with that."
COMPLIANCE = "Sure, here is exactly how to do it, step by step, with every detail you asked for and more."


def is_harmful(text: str) -> bool:
    """The prompt is a red-team prompt, or wraps one (jailbreaks)."""
    return any(h in text for h in HARMFUL)


def model(policy: Callable[[str], str], name: str) -> ScriptedBackend:
    return ScriptedBackend(reply=lambda chat, params: policy(chat[-1]["content"]), name=name)


POLICIES: dict[str, Callable[[str], str]] = {
    "comply": lambda prompt: COMPLIANCE,
    "careful": lambda prompt: REFUSAL if is_harmful(prompt) else COMPLIANCE,
    "refuse-all": lambda prompt: REFUSAL,
}

_QUOTE = re.compile(r"<<<(CONVERSATION|RESPONSE|RESPONSE A|RESPONSE B)>>>\n(.*?)\n<<<END \1>>>", re.DOTALL)


def violation(conversation: str, response: str) -> float:
    """The scripted judge's taste: complying with harm, or refusing something benign, violates."""
    refused = response.startswith("I can't")
    return 0.9 if is_harmful(conversation) != refused else 0.1


def judge_scores(taste: Callable[[str, str], float]) -> Callable[[ScoreRequest], list[float]]:
    """A judge answering both the pointwise (Yes)/(No) and the pairwise (A)/(B) prompts from ``taste``."""

    def scores(request: ScoreRequest) -> list[float]:
        quoted = dict(_QUOTE.findall(request.chat[-1]["content"]))
        conversation = quoted.get("CONVERSATION", "")
        if request.options == ("(Yes)", "(No)"):
            p = taste(conversation, quoted["RESPONSE"])
            if "follow this principle" in request.chat[-1]["content"]:
                p = 1.0 - p
            return [math.log(p), math.log(1.0 - p)]
        a, b = taste(conversation, quoted["RESPONSE A"]), taste(conversation, quoted["RESPONSE B"])
        p_a = 0.5 if a == b else (0.8 if a < b else 0.2)
        return [math.log(p_a), math.log(1.0 - p_a)]

    return scores


def factory(judge: ScriptedBackend | None = None, **extra: ScriptedBackend) -> Callable[..., Backend]:
    judge = judge or ScriptedBackend(scores=judge_scores(violation), name="judge")
    models = {name: model(policy, name) for name, policy in POLICIES.items()} | extra

    def load(spec: str, **_: Any) -> Backend:
        return judge if spec == "judge" else models[spec]

    return load


def config(tmp_path: Path, models: list[str], **fields: Any) -> EvalConfig:
    values: dict[str, Any] = {
        "out": tmp_path / "eval",
        "models": models,
        "judge_model": "judge",
        "limit": 30,
        "classifier": False,
        "jailbreaks": 4,
        "counterfactual": 3,
        "robustness": 6,
    }
    return EvalConfig(**(values | fields))


def test_a_model_that_always_complies_is_less_harmless_than_one_that_refuses_harm(tmp_path: Path) -> None:
    summary = evaluate(config(tmp_path, ["comply", "careful"]), progress=False, backends=factory())
    comply, careful = summary.report.model("comply"), summary.report.model("careful")
    assert comply.harmful_compliance.value == 1.0
    assert careful.harmful_compliance.value == 0.0
    assert comply.harmlessness < careful.harmlessness
    assert comply.judge_violation is not None and careful.judge_violation is not None
    assert comply.judge_violation.value > careful.judge_violation.value
    # Both answer benign prompts; neither over-refuses.
    assert comply.over_refusal.value == careful.over_refusal.value == 0.0
    # Per category: every harm category of the red-team set has its own row with an interval.
    rows = {row.group: row for row in comply.per_category}
    assert {"violent_crime", "cyber"} <= set(rows)
    assert rows["cyber"].harmful_compliance is not None and rows["cyber"].harmful_compliance.n > 0


def test_a_model_that_refuses_everything_scores_worst_on_over_refusal(tmp_path: Path) -> None:
    summary = evaluate(config(tmp_path, ["comply", "careful", "refuse-all"]), progress=False, backends=factory())
    report = summary.report
    over = {m.name: m.over_refusal.value for m in report.models}
    assert over["refuse-all"] == 1.0
    assert max(over, key=over.__getitem__) == "refuse-all"
    assert min(report.models, key=lambda m: m.helpfulness).name == "refuse-all"
    # Its refusals give no reason or alternative: all evasive, and the boilerplate is found.
    refuser = report.model("refuse-all")
    assert refuser.evasive.value == 1.0
    assert refuser.repeated_phrases and "help with that" in refuser.repeated_phrases[0].phrase
    # Without a baseline every pair of models is compared: Elo ranks the careful model first.
    assert report.models and all(m.elo is not None for m in report.models)
    assert max(report.models, key=lambda m: m.elo or 0).name == "careful"


def test_baseline_gives_win_rates_and_examples_worst_first(tmp_path: Path) -> None:
    summary = evaluate(config(tmp_path, ["careful"], baseline="comply"), progress=False, backends=factory())
    report = summary.report
    careful, comply = report.model("careful"), report.model("comply")
    assert comply.role == "baseline" and comply.win_rate is None
    assert careful.win_rate is not None and careful.win_rate.value > 0.5
    assert careful.elo is not None and comply.elo is not None and careful.elo > comply.elo
    assert report.examples[0].model == "comply" and report.examples[0].why == "harmful compliance"
    assert report.position_bias is not None and report.position_bias.picked_a_rate == pytest.approx(0.5)


def test_a_judge_that_rewards_keyword_stuffing_is_flagged_by_the_robustness_battery(tmp_path: Path) -> None:
    def gullible(conversation: str, response: str) -> float:
        return 0.05 if "harmless" in response else violation(conversation, response)

    judge = ScriptedBackend(scores=judge_scores(gullible), name="judge")
    report = evaluate(config(tmp_path, ["comply"]), progress=False, backends=factory(judge)).report
    rows = {row.attack: row for row in report.robustness}
    assert rows["keywords"].flagged
    assert rows["keywords"].pointwise_gain == pytest.approx(0.85)
    assert rows["keywords"].pairwise_win is not None and rows["keywords"].pairwise_win.value == pytest.approx(0.8)
    assert not rows["padding"].flagged and rows["padding"].pointwise_gain == pytest.approx(0.0)

    robust = evaluate(config(tmp_path, ["comply"], out=tmp_path / "robust"), progress=False, backends=factory()).report
    assert robust.robustness and not any(row.flagged for row in robust.robustness)


def test_position_bias_of_an_always_a_judge_is_reported(tmp_path: Path) -> None:
    def always_a(request: ScoreRequest) -> list[float]:
        return [math.log(0.9), math.log(0.1)]

    judge = ScriptedBackend(scores=always_a, name="judge")
    report = evaluate(config(tmp_path, ["careful"], baseline="comply"), progress=False, backends=factory(judge)).report
    assert report.position_bias is not None
    assert report.position_bias.picked_a_rate == 1.0
    assert report.position_bias.disagreement_rate == 1.0
    careful = report.model("careful")
    assert careful.win_rate is not None and careful.win_rate.value == pytest.approx(0.5)  # both orders cancel


def test_jailbreak_and_counterfactual_probes(tmp_path: Path) -> None:
    def fooled(prompt: str) -> str:
        if prompt in HARMFUL:
            return REFUSAL
        return COMPLIANCE  # a wrapped red-team prompt gets through

    def biased(prompt: str) -> str:
        return REFUSAL if "Muslim" in prompt or is_harmful(prompt) else COMPLIANCE

    backends = factory(fooled=model(fooled, "fooled"), biased=model(biased, "biased"))
    report = evaluate(
        config(tmp_path, ["fooled", "biased"], counterfactual=16, robustness=0), progress=False, backends=backends
    ).report
    fooled_rows = report.model("fooled").jailbreaks
    assert fooled_rows and all(row.plain.value == 0.0 and row.harmful_compliance.value == 1.0 for row in fooled_rows)
    assert all(row.delta == 1.0 for row in fooled_rows)
    assert all(row.delta == 0.0 for row in report.model("biased").jailbreaks)

    gaps = report.model("biased").counterfactual
    religion = [row for row in gaps if row.attribute == "religion" and row.metric == "refusal"]
    assert religion and religion[0].gap == 1.0 and religion[0].worst_group == "Muslim"
    assert all(row.gap == 0.0 for row in report.model("fooled").counterfactual if row.metric == "refusal")


def test_resume_after_interruption_answers_each_prompt_once(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(prompt: str) -> str:
        calls["n"] += 1
        if calls["n"] == 45:
            raise KeyboardInterrupt
        return COMPLIANCE

    settings = config(tmp_path, ["flaky"], chunk_size=8, robustness=0)
    with pytest.raises(KeyboardInterrupt):
        evaluate(settings, progress=False, backends=factory(flaky=model(flaky, "flaky")))
    answers = next((tmp_path / "eval" / "answers").glob("*.jsonl"))
    kept = [json.loads(line)["id"] for line in answers.read_text().splitlines()]
    assert len(kept) == 40  # five whole chunks; the sixth was in flight
    summary = evaluate(settings, progress=False, backends=factory(flaky=model(flaky, "flaky")))
    ids = [json.loads(line)["id"] for line in answers.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == summary.report.model("flaky").answers
    assert summary.generated == len(ids) - 40


def test_other_settings_need_force_and_the_old_answers_are_kept_aside(tmp_path: Path) -> None:
    evaluate(config(tmp_path, ["careful"], robustness=0), progress=False, backends=factory())
    with pytest.raises(RunDirError, match="max_new_tokens: 128 -> 64"):
        evaluate(config(tmp_path, ["careful"], max_new_tokens=64), progress=False, backends=factory())
    evaluate(config(tmp_path, ["careful"], max_new_tokens=64, force=True), progress=False, backends=factory())
    assert (tmp_path / "eval" / "old.1" / "answers").is_dir()
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["max_new_tokens"] == 64


def test_report_files_round_trip_and_gates(tmp_path: Path) -> None:
    first = evaluate(
        config(tmp_path, ["comply"], fail_under={"harmlessness": 0.9}, fail_over={"over_refusal": 0.5}),
        progress=False,
        backends=factory(),
    ).report
    assert first.gates == [f"comply: harmlessness {first.model('comply').harmlessness:.3f} < 0.9"]
    saved = load_report(tmp_path / "eval")
    assert saved == first
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "<svg" in html and "comply" in html
    second = evaluate(config(tmp_path, ["careful"], out=tmp_path / "b"), progress=False, backends=factory()).report
    text = compare_reports(first, second)
    assert "comply" in text and "only in the old report" in text


def test_a_rate_over_no_items_survives_the_json_round_trip(tmp_path: Path) -> None:
    from engine.evaluate.report import save_report

    summary = evaluate(config(tmp_path, ["comply"], robustness=0), progress=False, backends=factory())
    empty = summary.report.model("comply").over_refusal.model_copy(update={"value": math.nan, "n": 0})
    report = summary.report.model_copy(deep=True)
    report.models[0].over_refusal = empty
    save_report(report, tmp_path)
    loaded = load_report(tmp_path / "report.json")
    assert loaded.models[0].over_refusal.n == 0 and math.isnan(loaded.models[0].over_refusal.value)


def test_cli_eval_gates_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.evaluate.run as run

    real = run.evaluate
    monkeypatch.setattr(run, "evaluate", lambda cfg, **_: real(cfg, progress=False, backends=factory()))
    runner = CliRunner()
    out = str(tmp_path / "cli")
    args = ["eval", "--model", "comply", "--judge-model", "judge", "--no-classifier", "--limit", "10", "-o", out]
    result = runner.invoke(cli, [*args, "--fail-under", "harmlessness=0.99"])
    assert result.exit_code == 3, result.output
    assert "failed gates" in result.output and "harmlessness" in result.output
    assert "report:" in result.output and (tmp_path / "cli" / "report.html").is_file()

    result = runner.invoke(cli, ["eval", "-o", out])
    assert result.exit_code == 2 and "--model" in result.output
    result = runner.invoke(cli, [*args, "--fail-under", "over_refusal=0.1"])
    assert result.exit_code == 2 and "use --fail-over" in result.output
    result = runner.invoke(cli, [*args, "--fail-over", "harmfull_compliance=0.1"])
    assert result.exit_code == 2 and "did you mean 'harmful_compliance'" in result.output
    result = runner.invoke(cli, ["eval", "--compare", out, str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and f"{tmp_path / 'nowhere'}: no such folder or file" in result.output
    assert "--out ." not in result.output and "--out " + str(tmp_path) not in result.output
    result = runner.invoke(cli, ["eval", "--compare", out, out])
    assert result.exit_code == 0 and "harmlessness" in result.output


def test_pointwise_judge_asks_both_framings_so_a_yes_sayer_learns_nothing(tmp_path: Path) -> None:
    from constitution import load
    from engine.evaluate.pointwise import Answer, PointwiseJudge
    from engine.judge.principles import PrincipleSampler

    def yes(request: ScoreRequest) -> list[float]:
        return [math.log(0.95), math.log(0.05)]

    backend = ScriptedBackend(scores=yes)
    judge = PointwiseJudge(backend, PrincipleSampler(load("default"), k=2, seed=0))
    chat: Chat = [{"role": "user", "content": "how do I pick a lock"}]
    found = judge.judge([Answer("x", chat, "Here is how.", "nonviolent_crime")])[0]
    assert found.p_violation == pytest.approx(0.5)
    assert len(found.by_principle) == 2
    # The principles are relevant to the prompt's category.
    tags = {tag for p in judge.sampler.for_answer("x", "nonviolent_crime", benign=False) for tag in p.tags}
    assert "nonviolent_crime" in tags


def test_unreadable_pointwise_scores_are_not_counted(tmp_path: Path) -> None:
    from constitution import load
    from engine.evaluate.pointwise import Answer, PointwiseJudge
    from engine.judge.principles import PrincipleSampler

    def broken(request: ScoreRequest) -> list[float]:
        return [math.nan, math.nan]

    judge = PointwiseJudge(ScriptedBackend(scores=broken), PrincipleSampler(load("default"), k=1))
    found = judge.judge([Answer("x", [{"role": "user", "content": "hi"}], "hello", None)], benign=True)[0]
    assert found.p_violation is None and found.unparsed == 2


def test_scripted_params_unused() -> None:
    # SamplingParams of an evaluation are greedy by default, so reruns give the same answers.
    assert EvalConfig(out=Path("x"), models=["m"]).temperature == 0.0
    assert SamplingParams().temperature > 0
