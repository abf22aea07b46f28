"""A trained preference model as the judge (``rm:PATH``): the formula, the records, labelling, judge-eval, eval.

The end-to-end tests use a tiny random preference model (tests/models.py) with
the real SmolLM2 tokenizer; the rest use a fake scorer whose rewards the test
chooses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import constitution
import engine.backends.reward_model as reward_model
from engine.backends.base import Chat, SamplingParams
from engine.backends.scripted import ScriptedBackend, longer_is_better
from engine.cli import cli
from engine.dataset.rows import preference_row
from engine.errors import UserError
from engine.judge.pairs import judge_trajectories
from engine.judge.pairwise import Judge, Pair
from engine.judge.panel import Panel, make_judge
from engine.judge.preference_model import PreferenceModelJudge, preference
from engine.records import ConstitutionRef, JudgeSettings, Label, Round, Trajectory
from tests.models import build_tiny_reward_model, tiny_model_dir

RULES = constitution.load("default")
CHAT: Chat = [{"role": "user", "content": "How do I pick a lock?"}]


class FakeScorer:
    """A preference model whose reward of each response the test chooses (0 for any other); counts its calls."""

    def __init__(self, rewards: dict[str, float], name: str = "rm:fake") -> None:
        self.rewards = rewards
        self.name = name
        self.calls: list[list[tuple[Chat, str]]] = []

    def score(self, items: Sequence[tuple[Chat, str]]) -> list[float]:
        self.calls.append(list(items))
        return [self.rewards.get(response, 0.0) for _, response in items]


def trajectory(row_id: str, initial: str, revision: str) -> Trajectory:
    """A row with one round of revision that changed the answer."""
    revised = Round(principle_id=RULES.principles[0].id, critique="c", revision=revision, stopped=False, changed=True)
    return Trajectory(
        id=row_id,
        source="test",
        prompt=CHAT,
        initial=initial,
        rounds=[revised],
        final=revision,
        constitution=ConstitutionRef(id=RULES.id, version=RULES.version, hash=RULES.content_hash),
        models={"policy": {"model": "p"}, "critic": {"model": "p"}},
        sampling=SamplingParams(),
        seed=0,
        timings={},
    )


def pair(first: str, second: str, chat: Chat = CHAT) -> Pair:
    return Pair(chat, first, second, (RULES.principles[0],))


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random preference model (Llama with a scalar head) with the real tokenizer."""
    root = tmp_path_factory.mktemp("rm")
    return build_tiny_reward_model(tiny_model_dir(root), root / "rm")


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("lm"))


def scripted_run(out: Path) -> Path:
    result = invoke(
        "generate", "--model", "scripted", "--out", str(out), "--prompts", "mixed", "--limit", "4",
        "--revisions", "2", "--no-judge",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------ the judge


def test_p_first_is_the_sigmoid_of_the_reward_difference() -> None:
    scorer = FakeScorer({"good": 2.0, "bad": 0.5, "huge": 1000.0, "tiny": -1000.0})
    judge = PreferenceModelJudge(scorer)
    good_bad, bad_good, level, far, far_back = judge.compare(
        [pair("good", "bad"), pair("bad", "good"), pair("good", "good"), pair("huge", "tiny"), pair("tiny", "huge")]
    )
    assert good_bad.p_first == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert bad_good.p_first == pytest.approx(1 - good_bad.p_first)
    assert good_bad.winner == "first" and bad_good.winner == "second" and level.winner == "tie"
    assert far.p_first == 1.0 and far_back.p_first == 0.0  # no overflow at a difference of 2000
    assert preference(0.3, 0.3) == 0.5 and preference(math.inf, 0.0) is None


def test_each_distinct_response_is_scored_once_in_one_call() -> None:
    scorer = FakeScorer({"initial": 0.0, "revision_1": 1.0, "revision_2": 3.0})
    judge = PreferenceModelJudge(scorer)
    other: Chat = [{"role": "user", "content": "Another question"}]
    pairs = [pair("initial", "revision_1"), pair("initial", "revision_2"), pair("revision_1", "revision_2")]
    judged = judge.compare([*pairs, pair("initial", "revision_1", other)])
    assert len(scorer.calls) == 1 and judge.score_calls == 1
    # 3 candidates of the first conversation, and the same two texts again as answers to another one
    assert scorer.calls[0] == [
        (CHAT, "initial"),
        (CHAT, "revision_1"),
        (CHAT, "revision_2"),
        (other, "initial"),
        (other, "revision_1"),
    ]
    assert [c.p_first for c in judged[:3]] == pytest.approx([preference(0, 1), preference(0, 3), preference(1, 3)])
    assert judge.compare([]) == [] and len(scorer.calls) == 1  # nothing to judge: no call


def test_a_comparison_records_the_rewards_and_no_principle_or_position_bias() -> None:
    (c,) = PreferenceModelJudge(FakeScorer({"a": 1.25, "b": -0.5})).compare([pair("a", "b")])
    assert c.rewards == (1.25, -0.5)
    assert c.p_first_shown_first == c.p_first_shown_second == c.p_first
    assert c.principles == () and c.judgments == [] and not c.disagreed and c.unparsed == 0
    assert c.by_preference_model
    # the record survives the JSONL round trip
    assert type(c).model_validate_json(c.model_dump_json()) == c


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_reward_that_is_not_finite_makes_the_comparison_unreadable(bad: float) -> None:
    judge = PreferenceModelJudge(FakeScorer({"a": bad, "b": 0.0, "c": 1.0}))
    broken, fine = judge.compare([pair("a", "b"), pair("b", "c")])
    assert broken.p_first is None and broken.winner is None and broken.rewards is None and broken.unparsed == 1
    assert fine.p_first == pytest.approx(preference(0.0, 1.0))
    type(broken).model_validate_json(broken.model_dump_json())  # no NaN written into labels.jsonl


def test_labels_of_a_preference_model_name_no_principle_and_feed_the_dataset_as_preference_model() -> None:
    base = trajectory("row", "first answer", "a revision that changed it")
    judge = PreferenceModelJudge(FakeScorer({base.initial: -1.0, base.final: 2.0}))
    (label,) = judge_trajectories(judge, [base], RULES)
    assert label.status == "labelled" and label.principles == [] and label.by_preference_model
    assert label.chosen_prob == pytest.approx(preference(2.0, -1.0))
    row = preference_row(base, label)
    assert row is not None and row["label_source"] == "preference_model" and row["judge_principles"] == []
    assert row["chosen"][0]["content"] == base.final
    # an LM judge's label of the same row is still the AI judge's, with its principles
    (lm,) = judge_trajectories(Judge(ScriptedBackend(scores=longer_is_better)), [base], RULES)
    lm_row = preference_row(base, lm)
    assert lm_row is not None and lm_row["label_source"] == "ai_judge" and lm.principles


def test_chain_of_thought_is_refused_for_a_preference_model_before_it_loads() -> None:
    loaded: list[str] = []

    def load(spec: str) -> FakeScorer:
        loaded.append(spec)
        return FakeScorer({}, name=spec)

    with pytest.raises(UserError, match="--judge-cot: rm:x is a preference model"):
        make_judge(["rm:x"], lambda s: ScriptedBackend(), JudgeSettings(cot=True), rewards=load)
    assert loaded == []


# ------------------------------------------------------------------ panels


def test_a_panel_mixes_a_preference_model_and_a_language_model() -> None:
    scorer = FakeScorer({"short": 1.0, "a much longer answer": 0.0}, name="rm:fake")
    judge = make_judge(
        ["rm:fake", "scripted"],
        lambda spec: ScriptedBackend(scores=longer_is_better, name=spec),
        JudgeSettings(),
        RULES,
        rewards=lambda spec: scorer,
    )
    assert isinstance(judge, Panel) and judge.model == "rm:fake + scripted"
    (c,) = judge.compare([pair("short", "a much longer answer")])
    rm_p = preference(1.0, 0.0)
    assert c.by_judge == pytest.approx({"rm:fake": rm_p, "scripted": 0.2})
    assert c.p_first == pytest.approx((rm_p + 0.2) / 2) and c.split
    assert c.principles == (RULES.principles[0].id,)  # the language model's, though the rm came first
    assert {j.judge for j in c.judgments} == {"scripted"} and not c.by_preference_model
    # a panel of preference models alone labels as a preference model
    both = Panel([PreferenceModelJudge(scorer), PreferenceModelJudge(FakeScorer({"short": 3.0}, name="rm:other"))])
    (rms,) = both.compare([pair("short", "a much longer answer")])
    assert rms.by_preference_model and rms.principles == ()
    label = Label(
        id="x", status="labelled", chosen_from="initial", rejected_from="revision_1", chosen_prob=0.8, margin=0.6,
        judge_model=both.model, principles=[], candidates=["initial", "revision_1"], strengths=[0.8, 0.2],
        comparisons=[rms, c],
    )  # fmt: skip
    assert not label.by_preference_model  # one comparison had a language model in it


# ------------------------------------------------------------------ cai label, end to end


def test_cai_label_with_a_tiny_preference_model(tiny_rm: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    run = scripted_run(tmp_path / "run")
    spec = f"rm:{tiny_rm}"
    result = invoke("label", str(run), "--judge-model", spec, "--judge-check", "none", "--min-margin", "0")
    assert result.exit_code == 0, result.output
    assert "orders disagreed (position bias): 0% of 12 comparisons" in result.output  # 4 rows x 3 pairs
    labels = [Label.model_validate_json(line) for line in (run / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 4 and all(label.judge_model == spec and label.principles == [] for label in labels)
    manifest = json.loads((run / "labels.json").read_text())
    assert manifest["judge"] == spec
    # the recorded rewards are the model's own, and p_first their sigmoid
    trajectory = Trajectory.model_validate_json((run / "trajectories.jsonl").read_text().splitlines()[0])
    texts = trajectory.texts()
    first = next(label for label in labels if label.id == trajectory.id).comparisons[0]
    model = reward_model.load_reward_model(spec)
    expected = model.score([(trajectory.prompt, texts[first.first]), (trajectory.prompt, texts[first.second])])
    assert first.rewards == pytest.approx(tuple(expected), abs=1e-4)
    assert first.p_first == pytest.approx(preference(*expected), abs=1e-4)
    rows = load_from_disk(str(run / "dataset"))["preferences"]
    assert len(rows) == 4
    assert set(rows["label_source"]) == {"preference_model"} and set(rows["judge_model"]) == {spec}
    assert all(p == [] for p in rows["judge_principles"])
    card = (run / "README.md").read_text()
    assert "labelled by a trained preference model (`label_source = preference_model`)" in card


def test_the_judge_gate_checks_a_preference_model(tiny_rm: Path, tmp_path: Path) -> None:
    run = scripted_run(tmp_path / "run")
    result = invoke("label", str(run), "--judge-model", f"rm:{tiny_rm}")  # --judge-check builtin by default
    assert result.exit_code == 0, result.output
    check = json.loads((run / "labels.json").read_text())["check"]
    assert check["items"] == 16 and check["position_bias_rate"] == 0.0
    assert "judge check: right on" in result.output


# ------------------------------------------------------------------ cai judge-eval


def write_comparisons(path: Path) -> tuple[Path, dict[str, float]]:
    """Six labelled comparisons, and rewards that agree with the humans on five of them."""
    rows, rewards = [], {}
    for i in range(6):
        good, bad = f"good answer {i}", f"bad answer {i}"
        layout = {"chosen": good, "rejected": bad} if i % 2 else {"response_a": bad, "response_b": good, "better": "B"}
        rows.append({"id": f"c{i}", "prompt": f"question {i}?", **layout})
        rewards |= {good: 1.0, bad: 2.0 if i == 5 else -1.0}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rewards


def test_judge_eval_reports_a_preference_models_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file, rewards = write_comparisons(tmp_path / "labelled.jsonl")
    taken: list[dict[str, Any]] = []

    def load(spec: str, **options: Any) -> FakeScorer:
        taken.append(options)
        return FakeScorer(rewards, name=spec)

    monkeypatch.setattr(reward_model, "load_reward_model", load)
    out = tmp_path / "report.json"
    html = tmp_path / "report.html"
    result = invoke("judge-eval", str(file), "--judge-model", "rm:fake", "--batch-size", "3", "--json", str(out),
                    "--html", str(html))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rm:fake" in html.read_text()
    assert "judge rm:fake, protocol ours" in result.output and "accuracy: 83% (5/6)" in result.output
    (evaluation,) = json.loads(out.read_text())["evaluations"]
    assert evaluation["correct"] == 5 and evaluation["position_bias_rate"] == 0.0
    assert taken == [{"batch_size": 3, "dtype": "auto", "device": "auto"}]


def test_judge_eval_runs_the_tiny_preference_model_beside_a_language_model(tiny_rm: Path, tmp_path: Path) -> None:
    file, _ = write_comparisons(tmp_path / "labelled.jsonl")
    out = tmp_path / "report.json"
    result = invoke("judge-eval", str(file), "--judge-model", f"rm:{tiny_rm}", "--judge-model", "scripted",
                    "--json", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [e["judge_model"] for e in report["evaluations"]] == [f"rm:{tiny_rm}", "scripted"]
    assert all(e["n"] == 6 for e in report["evaluations"]) and "ours" in report["agreements"]


PUBLISHED = Path(__file__).parent / "data" / "published"


def test_judge_eval_scores_a_preference_model_by_our_protocol_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reward_model, "load_reward_model", lambda spec, **_: FakeScorer({}, name=spec))
    out = tmp_path / "report.json"
    two = str(PUBLISHED / "hhh_two_options.jsonl")
    result = invoke("judge-eval", two, "--judge-model", "rm:fake", "--judge-model", "scripted", "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    scored = [(e["judge_model"], e["protocol"]) for e in report["evaluations"]]
    assert scored == [("rm:fake", "ours"), ("scripted", "ours"), ("scripted", "as-written")]
    assert any("rm:fake is a preference model: scored by our protocol only" in n for n in report["notes"])
    # asked for the as-written protocol alone, or on a file whose options are phrases: one message, exit 2
    result = invoke("judge-eval", two, "--judge-model", "rm:fake", "--protocol", "as-written")
    assert result.exit_code == 2 and "cannot be scored as written" in result.output
    assert "--protocol ours" in result.output and "Traceback" not in result.output
    result = invoke("judge-eval", str(PUBLISHED / "harm_categories.jsonl"), "--judge-model", "rm:fake")
    assert result.exit_code == 2 and "are not responses" in result.output


# ------------------------------------------------------------------ cai eval


def test_eval_compares_models_pairwise_with_a_preference_model(tmp_path: Path) -> None:
    from engine.config import EvalConfig
    from engine.evaluate.run import evaluate

    refusal, compliance = "I can't help with that.", "Sure, here is how."
    models = {
        "careful": ScriptedBackend(reply=lambda chat, params: refusal, name="careful"),
        "comply": ScriptedBackend(reply=lambda chat, params: compliance, name="comply"),
    }
    scorer = FakeScorer({refusal: 2.0, compliance: -2.0}, name="rm:fake")
    config = EvalConfig(
        out=tmp_path / "eval", models=["careful"], baseline="comply", judge_model="rm:fake", limit=6,
        classifier=False, jailbreaks=0, counterfactual=0, robustness=4, sycophancy=0,
    )  # fmt: skip
    summary = evaluate(config, progress=False, backends=lambda spec, **_: models[spec], rewards=lambda s, **_: scorer)
    careful = summary.report.model("careful")
    assert careful.win_rate is not None and careful.win_rate.value == pytest.approx(preference(2.0, -2.0))
    assert len(scorer.calls) == 1  # answers were not judged pointwise by the preference model
    assert (tmp_path / "eval" / "report.html").is_file()


# ------------------------------------------------------------------ bad input


def test_bad_preference_model_specs_end_in_one_message(tiny_rm: Path, causal_lm: Path, tmp_path: Path) -> None:
    run = scripted_run(tmp_path / "run")
    cases = {
        "rm:": "rm: needs a path: rm:PATH",
        "rm:/no/such/folder": "rm:/no/such/folder: no such model folder; rm:PATH takes a folder written by",
        f"rm:{causal_lm}": "not a preference model (architectures LlamaForCausalLM",
    }
    for spec, message in cases.items():
        for args in (["label", str(run), "--judge-check", "none"], ["judge-eval", "--limit", "2"]):
            result = invoke(*args, "--judge-model", spec)
            assert result.exit_code == 1, (spec, args, result.output)
            assert message in result.output and "Traceback" not in result.output, result.output
    assert not (run / "labels.jsonl").exists()  # nothing labelled by a judge that failed to load
    result = invoke("generate", "--model", f"rm:{tiny_rm}", "--out", str(tmp_path / "policy"), "--limit", "2")
    assert result.exit_code == 1
    assert "a preference model scores responses, it does not write them" in result.output
    assert "give --model a language model" in result.output
