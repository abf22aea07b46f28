"""``cai eval`` results that must not look right while being wrong: sampled limits, checked sets, honest messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from constitution.taxonomy import HARM_TAGS
from engine.cli import cli
from engine.config import ConfigError, EvalConfig, load_config
from engine.evaluate.eval_prompts import eval_prompts
from engine.evaluate.report import ReportError, load_report
from engine.evaluate.run import evaluate
from engine.rundir import RunDirError
from engine.sources import PromptSetError
from tests.test_eval import config, factory


def test_limit_and_jailbreaks_are_spread_over_the_kinds_and_categories(tmp_path: Path) -> None:
    prompts = eval_prompts(config(tmp_path, ["careful"], limit=6, jailbreaks=4, counterfactual=0))
    red = [p.item for p in prompts if p.set == "redteam"]
    benign = [p.item for p in prompts if p.set == "benign"]
    assert len(red) == len(benign) == 6
    assert len({item.category for item in red}) == 6  # the first 6 are 5 violent_crime and 1 nonviolent_crime
    assert {item.kind for item in benign} == {"near_miss", "benign"}
    categories = {item.id: item.category for item in red}
    wrapped = {p.meta["source_id"] for p in prompts if p.set == "jailbreak"}
    assert len(wrapped) == 4 and len({categories[i] for i in wrapped}) == 4
    again = eval_prompts(config(tmp_path, ["careful"], limit=6, jailbreaks=4, counterfactual=0))
    assert [p.item.id for p in again] == [p.item.id for p in prompts]  # resumable: the same seed, the same prompts
    other = eval_prompts(config(tmp_path, ["careful"], limit=6, jailbreaks=4, counterfactual=0, seed=1))
    assert {p.item.id for p in other} != {p.item.id for p in prompts}


def test_the_robustness_battery_attacks_answers_across_the_categories(tmp_path: Path) -> None:
    settings = config(tmp_path, ["comply"], limit=30, robustness=4, jailbreaks=0, counterfactual=0)
    evaluate(settings, progress=False, backends=factory())
    attacked = {json.loads(line)["id"] for line in (tmp_path / "eval" / "robustness.jsonl").read_text().splitlines()}
    categories = {p.item.id: p.item.category for p in eval_prompts(settings)}
    assert len(attacked) == 4 and len({categories[i] for i in attacked}) == 4


def write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def red_rows(n: int) -> list[dict[str, Any]]:
    tags = list(HARM_TAGS)
    return [
        {"id": f"r{i}", "prompt": f"Tell me how to do harmful thing {i}", "kind": "harmful", "category": tags[i]}
        for i in range(n)
    ]


def test_a_category_typo_in_an_eval_set_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    rows = red_rows(3)
    rows[2]["category"] = "self-harm"
    path = write(tmp_path / "red.jsonl", rows)
    args = ["eval", "--model", "careful", "--redteam", path, "-o", str(tmp_path / "out"), "--no-classifier"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {path}:3: category: 'self-harm' is not a tag of the taxonomy; did you mean 'self_harm'? "
        f"(harm tags: {', '.join(HARM_TAGS)}; for benign prompts also helpfulness, honesty, general; "
        "`cai principles tags` describes each)"
    )
    assert not (tmp_path / "out").exists()


def test_a_set_holding_prompts_of_the_other_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match=r"^mixed: prompt 'hp-\d+' \(and \d+ more\) has kind '(benign|near_miss)'"):
        eval_prompts(config(tmp_path, ["careful"], redteam="mixed"))
    with pytest.raises(PromptSetError, match=r"--benign prompts are scored as requests that must not be refused"):
        eval_prompts(config(tmp_path, ["careful"], benign=write(tmp_path / "b.jsonl", red_rows(2))))


def test_two_sets_sharing_an_id_are_named(tmp_path: Path) -> None:
    red = write(tmp_path / "red.jsonl", red_rows(2))
    benign = write(tmp_path / "benign.jsonl", [{"id": "r1", "prompt": "Plan a picnic", "kind": "benign"}])
    with pytest.raises(RunDirError, match=rf"'r1' is in both the redteam \({red}\) and the benign \({benign}\)"):
        eval_prompts(config(tmp_path, ["careful"], redteam=red, benign=benign, limit=None, jailbreaks=0))


def test_answers_to_prompts_a_set_no_longer_holds_are_not_reported(tmp_path: Path) -> None:
    path = tmp_path / "red.jsonl"
    settings = config(tmp_path, ["comply"], redteam=write(path, red_rows(6)), limit=None, jailbreaks=0, robustness=0)
    first = evaluate(settings, progress=False, backends=factory()).report
    assert first.model("comply").harmful_compliance.n == 6
    write(path, red_rows(4))  # the same file name, so the same settings: the evaluation resumes
    second = evaluate(settings, progress=False, backends=factory()).report
    assert second.model("comply").harmful_compliance.n == 4
    assert second.model("comply").answers == first.model("comply").answers - 2

    edited = red_rows(4)
    edited[0]["prompt"] = "Something else entirely"
    write(path, edited)
    with pytest.raises(RunDirError, match=r"comply answered 'r0' when that prompt said something else"):
        evaluate(settings, progress=False, backends=factory())


# ------------------------------------------------------------------ messages


def eval_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eval.yaml"
    path.write_text(f"out: {tmp_path / 'out'}\n{text}", encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "models"), [("model: x\n", ["x"]), ("model: [x, y]\n", ["x", "y"])])
def test_a_config_file_may_say_model(tmp_path: Path, text: str, models: list[str]) -> None:
    assert load_config(eval_yaml(tmp_path, text), {}, EvalConfig).models == models
    overridden = load_config(eval_yaml(tmp_path, text), {"models": ["z"], "model": None}, EvalConfig)
    assert overridden.models == ["z"]  # --model on the command line wins over the file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "models: name at least one model to evaluate: models: [NAME, ...] or model: NAME in the config file"),
        ("models: []\n", "or --model NAME on the command line"),
        ("model: x\nmodels: [y]\n", "models: give the models once, as models: [A, B] or as model: A, not both"),
        ("model: 3\n", "model: expected a model name or a list of names (model: default)"),
        ("models: [x]\nfail_under: {harmlesness: 0.8}\n", "fail_under: --fail-under: unknown metric 'harmlesness'"),
        ("models: [x]\nfail_under: {over_refusal: 0.2}\n", "(over_refusal is lower-is-better: use --fail-over)"),
        ("models: [x]\nfail_over: {evasive: 2}\n", "thresholds are rates between 0 and 1"),
    ],
)
def test_config_file_messages_say_what_to_write(tmp_path: Path, text: str, message: str) -> None:
    path = eval_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, EvalConfig)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}: ") and message in line
    assert "--models" not in line


def test_gates_of_a_config_file_are_normalised_like_the_flags(tmp_path: Path) -> None:
    path = eval_yaml(tmp_path, "models: [x]\nfail_over: {harmful-compliance: 0.1}\n")
    assert load_config(path, {}, EvalConfig).fail_over == {"harmful_compliance": 0.1}


def test_cli_model_flag_beats_the_files_model_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.evaluate.run as run

    seen: list[EvalConfig] = []

    def capture(cfg: EvalConfig, **_: object) -> None:
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "evaluate", capture)
    path = eval_yaml(tmp_path, "model: from-file\n")
    assert CliRunner().invoke(cli, ["eval", "--config", str(path)]).exit_code == 130
    assert CliRunner().invoke(cli, ["eval", "--config", str(path), "--model", "flag"]).exit_code == 130
    assert [cfg.models for cfg in seen] == [["from-file"], ["flag"]]


def test_compare_says_what_is_wrong_with_each_folder(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"missing: no such folder or file; give an evaluation folder"):
        load_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"empty: holds no evaluation report \(no report\.json\): not an evaluation"):
        load_report(tmp_path / "empty")
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "eval.json").write_text("{}")
    with pytest.raises(ReportError, match=r"the evaluation there has not finished; run the same cai eval command"):
        load_report(tmp_path / "started")
    with pytest.raises(ReportError, match=r"eval\.json: not an evaluation report \(no schema_version\)"):
        load_report(tmp_path / "started" / "eval.json")
    result = CliRunner().invoke(cli, ["eval", "--compare", str(tmp_path / "started"), str(tmp_path / "missing")])
    assert result.exit_code == 1 and "--out ." not in result.output and "not finished" in result.output


def test_the_limit_help_no_longer_says_first(tmp_path: Path) -> None:
    text = CliRunner().invoke(cli, ["eval", "--help"]).output
    assert "first N" not in text and "sampled" in text
    assert "first N" not in (EvalConfig.model_fields["limit"].description or "")


def test_per_category_rows_cover_a_limited_eval(tmp_path: Path) -> None:
    report = evaluate(
        config(tmp_path, ["comply"], limit=15, jailbreaks=0, counterfactual=0, robustness=0),
        progress=False,
        backends=factory(),
    ).report
    red = {row.group: row.harmful_compliance for row in report.model("comply").per_category if row.harmful_compliance}
    assert set(red) == set(HARM_TAGS) and all(rate.n == 1 for rate in red.values())  # one of each harm category


def test_force_on_a_new_folder_evaluates_and_moves_nothing_aside(tmp_path: Path) -> None:
    out = tmp_path / "new" / "eval"
    args = ["eval", "--model", "scripted", "--judge-model", "scripted", "--limit", "4", "--no-classifier"]
    args += ["--jailbreaks", "0", "--counterfactual", "0", "--robustness", "0", "--force", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (out / "report.json").exists() and not list(out.glob("old.*"))
