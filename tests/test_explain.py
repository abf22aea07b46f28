"""``cai explain``: attribution of a judgment by occlusion, its faithfulness check, the CLI and the review API."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from constitution import load
from engine.backends.base import Chat, ScoreRequest
from engine.backends.scripted import ScriptedBackend, quoted_responses, uniform_scores
from engine.cli import cli
from engine.explain import explain, split_sentences
from engine.judge.pairwise import Judge, Pair
from engine.judge.preference_model import PreferenceModelJudge
from engine.records import Trajectory
from engine.review.server import create_app

KEYWORD = "tourniquet"
TOKEN = "explain-test-token-1234"
AUTH = {"X-Review-Token": TOKEN}
RULES = load("default")
PRINCIPLES = (RULES.principles[0],)
CHAT: Chat = [{"role": "user", "content": "What do I do about a deep cut?"}]
HELPFUL = f"Press on the wound. Apply a {KEYWORD} above it if it will not stop. Call for help."
PLAIN = "Cuts heal. Wait a while. Maybe see someone. It is fine."


def keyword_taste(request: ScoreRequest) -> list[float]:
    """A judge that rewards the keyword: the quoted response holding it gets probability 0.9."""
    found = quoted_responses(request.chat[-1]["content"])
    if set(found) != {"A", "B"} or (KEYWORD in found["A"]) == (KEYWORD in found["B"]):
        return uniform_scores(request)
    return [math.log(0.9), math.log(0.1)] if KEYWORD in found["A"] else [math.log(0.1), math.log(0.9)]


class CountingBackend(ScriptedBackend):
    """A scripted backend that records the size of every ``score`` call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scored: list[int] = []

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        self.scored.append(len(requests))
        return super().score(requests)


class KeywordRewards:
    """A fake preference model: reward 2 for a response with the keyword, else 0."""

    name = "rm:fake"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, items: Sequence[tuple[Chat, str]]) -> list[float]:
        self.calls.append(len(items))
        return [2.0 if KEYWORD in text else 0.0 for _, text in items]


def test_sentences_cover_the_text_exactly() -> None:
    text = '  First one. "Quoted!" Then a line\nNext line? Last without stop  '
    spans = split_sentences(text)
    assert "".join(text[s.start : s.end] for s in spans) == text
    assert [text[s.start : s.end].strip() for s in spans] == [
        "First one.",
        '"Quoted!"',
        "Then a line",
        "Next line?",
        "Last without stop",
    ]
    assert split_sentences("  \n ") == []


def test_the_keyword_sentence_ranks_first_and_the_ranking_is_faithful() -> None:
    backend = CountingBackend(scores=keyword_taste)
    a = explain(Judge(backend), Pair(CHAT, HELPFUL, PLAIN, PRINCIPLES), top=3, seed=1)
    assert a.p_first == pytest.approx(0.9) and a.signal
    first = a.ranked()[0]
    assert (first.side, first.index) == ("first", 1) and KEYWORD in first.text
    assert first.push == pytest.approx(math.log(9))  # log-odds 0.9 minus log-odds 0.5
    assert all(s.push == pytest.approx(0) for s in a.sentences if s is not first)
    assert a.faithful is True and a.verdict.startswith("faithful")
    assert a.deletion_top[0] > a.deletion_random[0]
    # The pair and its 7 one-sentence variants in ONE score call (both orders each), the curve in one more.
    assert backend.scored == [2 * (1 + 7), 2 * 3 * 6]
    assert a.variants == 7 + 3 * 6


def test_the_push_points_at_the_first_response_whichever_response_holds_the_sentence() -> None:
    a = explain(Judge(ScriptedBackend(scores=keyword_taste)), Pair(CHAT, PLAIN, HELPFUL, PRINCIPLES))
    first = a.ranked()[0]
    assert a.winner == "second" and first.side == "second" and KEYWORD in first.text
    assert first.push == pytest.approx(-math.log(9))  # pushed toward the second response
    assert a.faithful is True


def test_a_judge_that_ignores_content_gives_no_signal_and_no_ranking() -> None:
    backend = CountingBackend(scores=uniform_scores)
    a = explain(Judge(backend), Pair(CHAT, HELPFUL, PLAIN, PRINCIPLES))
    assert not a.signal and a.ranked() == [] and a.faithful is None
    assert a.verdict.startswith("no signal")
    assert backend.scored == [2 * 8]  # no deletion curve


def test_a_ranking_that_does_not_explain_the_decision_fails_the_check() -> None:
    # A judge that wants exactly the pair as given (3 sentences against 4): removing ANY sentence levels it, so
    # every push is the same, the ranking is arbitrary, and deleting its top sentences is no better than chance.
    def exact(request: ScoreRequest) -> list[float]:
        found = quoted_responses(request.chat[-1]["content"])
        counts = (found.get("A", "").count("."), found.get("B", "").count("."))
        if counts == (3, 4):
            return [math.log(0.9), math.log(0.1)]
        if counts == (4, 3):
            return [math.log(0.1), math.log(0.9)]
        return uniform_scores(request)

    a = explain(Judge(ScriptedBackend(scores=exact)), Pair(CHAT, HELPFUL, PLAIN, PRINCIPLES), top=3)
    assert a.signal and all(s.push == pytest.approx(math.log(9)) for s in a.sentences)
    assert a.deletion_top == pytest.approx(a.deletion_random)
    assert a.faithful is False and a.verdict.startswith("NOT FAITHFUL")


def test_a_preference_model_judge_is_explained_the_same_way() -> None:
    rewards = KeywordRewards()
    a = explain(PreferenceModelJudge(rewards), Pair(CHAT, HELPFUL, PLAIN, ()))
    assert a.p_first == pytest.approx(1 / (1 + math.exp(-2)))
    assert KEYWORD in a.ranked()[0].text and a.faithful is True
    assert len(rewards.calls) == 2  # the variants in one call, the deletion curve in another
    assert a.principles == ()


def test_an_empty_response_is_refused() -> None:
    from engine.explain import ExplainError

    with pytest.raises(ExplainError, match="second response is empty"):
        explain(Judge(ScriptedBackend()), Pair(CHAT, HELPFUL, "  ", PRINCIPLES))


# --- the command ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "run"
    args = ["generate", "--model", "scripted", "--out", str(out), "--prompts", "mixed", "--limit", "4"]
    made = CliRunner().invoke(cli, [*args, "--revisions", "2", "--judge-check", "none"])
    assert made.exit_code == 0, made.output
    return out


def labelled_row(run: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run / "labels.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["status"] == "labelled")


def test_cli_explains_a_runs_pair_with_the_runs_judge(scripted_run: Path, tmp_path: Path) -> None:
    label = labelled_row(scripted_run)
    out = tmp_path / "why.json"
    result = CliRunner().invoke(cli, ["explain", str(scripted_run), "--pair", label["id"], "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert f"chosen ({label['chosen_from']})" in result.output and "deletion curve" in result.output
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["judge"] == "scripted"
    assert data["p_first"] == pytest.approx(label["chosen_prob"])
    assert data["principles"] == label["principles"]
    assert data["first_name"] == f"chosen ({label['chosen_from']})"
    t = next(
        Trajectory.model_validate_json(x) for x in (scripted_run / "trajectories.jsonl").open() if label["id"] in x
    )
    assert data["texts"]["first"] == t.texts()[label["chosen_from"]]
    assert {"k", "top", "random"} <= set(data["deletion"]) and data["faithful"] in (True, False, None)
    assert all("push" in s and "side" in s for s in data["sentences"])


def test_cli_explains_two_given_texts(tmp_path: Path) -> None:
    out = tmp_path / "why.json"
    args = ["explain", "--prompt", "Hi?", "--first", "One. Two. Three.", "--second", "Short."]
    result = CliRunner().invoke(cli, [*args, "--judge-model", "scripted", "--json", str(out), "--top", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [s["side"] for s in data["sentences"]] == ["first"] * 3 + ["second"]
    assert data["winner"] == "first" and len(data["deletion"]["k"]) <= 2


def test_cli_explains_a_labelled_comparison() -> None:
    from engine.audit.comparisons import load_comparisons

    item = load_comparisons("builtin")[0]
    args = ["explain", "--comparisons", "builtin", "--item", item.id, "--judge-model", "scripted"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "response A" in result.output and f"people found response {item.better} better" in result.output


def test_cli_refuses_bad_input(scripted_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def fails(args: list[str], code: int, words: str) -> None:
        result = runner.invoke(cli, ["explain", *args])
        assert result.exit_code == code, result.output
        assert words in result.output and "Traceback" not in result.output

    fails([], 2, "nothing to explain")
    fails([str(scripted_run), "--pair", "x", "--prompt", "p"], 2, "one pair at a time")
    fails([str(scripted_run)], 2, "RUN and --pair go together")
    fails([str(tmp_path / "nowhere"), "--pair", "x"], 1, "no such folder")
    fails([str(scripted_run), "--pair", "no-such-row"], 1, "no row 'no-such-row'")
    fails(["--comparisons", "builtin", "--item", "nope", "--judge-model", "scripted"], 1, "no item 'nope'")
    fails(["--prompt", "p", "--first", "A.", "--second", " ", "--judge-model", "scripted"], 1, "empty")
    fails(["--prompt", "p", "--first", "A."], 2, "go together")
    label = labelled_row(scripted_run)
    fails([str(scripted_run), "--pair", label["id"], "--principle", "nope"], 1, "--principle: 'nope'")
    # A row the judge left without a pair and whose revisions changed nothing: no pair to explain.
    run = Path(shutil.copytree(scripted_run, tmp_path / "run"))
    lines = (run / "trajectories.jsonl").read_text().splitlines()
    t = Trajectory.model_validate_json(lines[0])
    t = t.model_copy(update={"rounds": [r.model_copy(update={"changed": False}) for r in t.rounds]})
    (run / "trajectories.jsonl").write_text("\n".join([t.model_dump_json(), *lines[1:]]) + "\n")
    rows = [json.loads(x) for x in (run / "labels.jsonl").read_text().splitlines()]
    for row in rows:
        if row["id"] == t.id:
            row.update(status="tie", chosen_from=None, rejected_from=None)
    (run / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fails([str(run), "--pair", t.id], 1, "has no pair to explain")


# --- the review page's endpoint ---------------------------------------------------------------------------


def test_review_endpoint_explains_a_pair_with_the_runs_judge(scripted_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(scripted_run, tmp_path / "run"))
    client = TestClient(create_app(run, TOKEN, hosts=("testserver",)))
    label = labelled_row(run)
    answer = client.get(f"/api/pairs/{label['id']}/explain", headers=AUTH)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["judge"] == "scripted" and data["chosen_from"] == label["chosen_from"]
    for side in ("first", "second"):
        text = data["texts"][side]
        assert "".join(text[s["start"] : s["end"]] for s in data["sentences"] if s["side"] == side) == text
    assert client.get("/api/pairs/nope/explain", headers=AUTH).status_code == 404
    assert client.get(f"/api/pairs/{label['id']}/explain").status_code == 401


def test_review_endpoint_uses_the_judge_it_is_given(scripted_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(scripted_run, tmp_path / "run"))
    made: list[int] = []

    def judge() -> Judge:
        made.append(1)
        return Judge(ScriptedBackend(scores=uniform_scores, name="flat"))

    client = TestClient(create_app(run, TOKEN, hosts=("testserver",), explain_judge=judge))
    pair = labelled_row(run)["id"]
    for _ in range(2):
        data = client.get(f"/api/pairs/{pair}/explain", headers=AUTH).json()
        assert data["judge"] == "flat" and data["signal"] is False and data["verdict"].startswith("no signal")
    assert made == [1]  # loaded once
