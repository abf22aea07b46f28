"""A panel of judges labelling a run: the combined probability, each judge's own, the split flag, the manifest."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import constitution
import engine.backends
from engine.backends.base import Backend, ScoreRequest
from engine.backends.scripted import ScriptedBackend, longer_is_better
from engine.cli import cli
from engine.judge.pairwise import Judge, Pair
from engine.judge.panel import Panel
from engine.records import JudgeSettings


def shorter_is_better(request: ScoreRequest) -> list[float]:
    return list(reversed(longer_is_better(request)))


def test_a_panel_combines_by_mean_or_majority_and_keeps_each_judge() -> None:
    rules = constitution.load("default")
    pair = Pair([{"role": "user", "content": "q"}], "one", "two", (rules.principles[0],))

    # Judges that prefer the first response ("one") with probability q, whichever slot it is shown in.
    def prefers_first(q: float) -> Callable[[ScoreRequest], list[float]]:
        def scores(request: ScoreRequest) -> list[float]:
            first_as_a = "<<<RESPONSE A>>>\none\n" in request.chat[-1]["content"]
            p_a = q if first_as_a else 1 - q
            return [math.log(p_a), math.log(1 - p_a)]

        return scores

    judges = [Judge(ScriptedBackend(scores=prefers_first(q), name=f"j{q}")) for q in (0.9, 0.6, 0.2)]
    (mean,) = Panel(judges).compare([pair])
    assert mean.p_first == pytest.approx((0.9 + 0.6 + 0.2) / 3)
    assert mean.by_judge == pytest.approx({"j0.9": 0.9, "j0.6": 0.6, "j0.2": 0.2})
    assert mean.split and not mean.disagreed
    assert {j.judge for j in mean.judgments} == {"j0.9", "j0.6", "j0.2"} and len(mean.judgments) == 6
    majority_judges = [Judge(j.backend, JudgeSettings(aggregate="majority")) for j in judges]
    (majority,) = Panel(majority_judges).compare([pair])
    assert majority.p_first == pytest.approx(2 / 3)  # two of the three voted for the first response
    (agreeing,) = Panel(judges[:2]).compare([pair])
    assert not agreeing.split and agreeing.p_first == pytest.approx(0.75)
    assert Panel([judges[0], judges[0]]).names == ["j0.9 #1", "j0.9 #2"]


@pytest.fixture
def judges(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Callable[[ScoreRequest], list[float]]]], None]:
    def install(table: dict[str, Callable[[ScoreRequest], list[float]]]) -> None:
        def load(spec: str = "default", **_: object) -> Backend:
            return ScriptedBackend(scores=table.get(spec, longer_is_better), name=spec)

        monkeypatch.setattr(engine.backends, "load_backend", load)

    return install


def generate(out: Path, *args: str) -> tuple[int, str, str]:
    command = ["generate", "--out", str(out), "--model", "scripted", "--limit", "4", "--revisions", "1"]
    result = CliRunner().invoke(cli, [*command, "--judge-check", "none", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def labels(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "labels.jsonl").read_text().splitlines()]


def test_generate_with_two_judges_records_the_panel_and_where_it_split(
    judges: Callable[..., None], tmp_path: Path
) -> None:
    judges({"long": longer_is_better, "short": shorter_is_better})
    code, _, stderr = generate(tmp_path / "run", "--judge-model", "long", "--judge-model", "short")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert manifest["judge"] == "long" and manifest["panel"] == ["long", "short"]
    rows = labels(tmp_path / "run")
    judged = [c for row in rows for c in row["comparisons"]]
    assert judged and all(c["split"] and set(c["by_judge"]) == {"long", "short"} for c in judged)
    assert all(row["judge_model"] == "long + short" for row in rows)
    assert all(row["status"] in ("tie", "single") for row in rows)  # opposite tastes at 0.8: a mean of 0.5
    # another panel on the same folder is another judge: refused without --force
    code, _, stderr = generate(tmp_path / "run", "--judge-model", "long", "--judge-model", "long")
    assert code == 1 and "panel" in stderr and "--force" in stderr


def test_label_with_an_agreeing_panel(judges: Callable[..., None], tmp_path: Path) -> None:
    judges({"a": longer_is_better, "b": longer_is_better})
    code, _, stderr = generate(tmp_path / "run", "--no-judge")
    assert code == 0, stderr
    result = CliRunner().invoke(
        cli, ["label", str(tmp_path / "run"), "--judge-model", "a", "--judge-model", "b", "--judge-check", "none"]
    )
    assert result.exit_code == 0, result.stderr
    rows = labels(tmp_path / "run")
    judged = [c for row in rows for c in row["comparisons"]]
    assert judged and not any(c["split"] for c in judged)
    assert any(row["status"] == "labelled" and row["chosen_prob"] == pytest.approx(0.8) for row in rows)


def test_a_panel_run_splits_show_in_the_review_filter(judges: Callable[..., None], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from engine.review.server import create_app

    def long_then_short(request: ScoreRequest) -> list[float]:
        """Agrees with the longer-is-better judge when the prompt has an odd length, and disagrees otherwise."""
        scores = longer_is_better(request)
        return scores if len(request.chat[-1]["content"]) % 2 else list(reversed(scores))

    judges({"long": longer_is_better, "mixed": long_then_short})
    code, _, stderr = generate(tmp_path / "run", "--judge-model", "long", "--judge-model", "mixed", "--limit", "8")
    assert code == 0, stderr
    split = {row["id"] for row in labels(tmp_path / "run") if any(c["split"] for c in row["comparisons"])}
    token = "panel-end-to-end-token-01"
    client = TestClient(create_app(tmp_path / "run", token, hosts=("testserver",)))
    auth = {"X-Review-Token": token}
    assert client.get("/api/run", headers=auth).json()["panel"] is True
    listed = {row["id"] for row in client.get("/api/pairs?limit=500&split=true", headers=auth).json()["rows"]}
    others = {row["id"] for row in client.get("/api/pairs?limit=500&split=false", headers=auth).json()["rows"]}
    assert listed == split and not listed & others
    assert listed and others  # the mixed judge agrees on some pairs and not on others
