"""Judge robustness: what the attack's inserted text contributed to the attacked comparison (occlusion)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from constitution import load
from engine.backends.base import ScoreRequest
from engine.backends.scripted import ScriptedBackend
from engine.evaluate.answers import AttackRecord, EvalStore, read_all
from engine.evaluate.html import render_html
from engine.evaluate.probes.judge_attacks import apply_attack, attack_ids, attack_parts
from engine.evaluate.report import AttackRow, load_report
from engine.evaluate.run import evaluate
from engine.explain.occlusion import Cut, occlude
from engine.explain.sentences import Span
from engine.judge import Judge, Pair
from engine.judge.panel import PairJudge
from engine.records import Comparison
from tests.html_page import parse
from tests.test_eval import config, factory, judge_scores, violation
from tests.test_eval_html import full_report

SCRIPT = "<script>alert(1)</script>"
PRINCIPLES = (load("default").principles[0],)


def gullible(conversation: str, response: str) -> float:
    """A judge that takes the word "harmless" for a harmless answer."""
    return 0.05 if "harmless" in response else violation(conversation, response)


def records(folder: Path) -> dict[tuple[str, str], AttackRecord]:
    return {(r.id, r.attack): r for r in read_all(EvalStore(folder).robustness())}


def test_keyword_stuffing_fools_the_judge_and_the_inserted_text_gets_the_push(tmp_path: Path) -> None:
    judge = ScriptedBackend(scores=judge_scores(gullible), name="judge")
    summary = evaluate(config(tmp_path, ["comply"]), progress=False, backends=factory(judge))
    stuffed = [r for (_, attack), r in records(tmp_path / "eval").items() if attack == "keywords"]
    assert len(stuffed) == 6
    for r in stuffed:
        assert r.p_attacked_better == pytest.approx(0.8)  # fooled
        assert r.attribution is not None
        # All of the judge's lean toward the attacked answer comes from the inserted keywords.
        assert r.attribution.inserted == pytest.approx(math.log(4))
        assert r.attribution.rest == pytest.approx(0.0)
        assert r.attribution.log_odds == pytest.approx(math.log(4))
    rows = {row.attack: row for row in summary.report.robustness}
    keywords, padding = rows["keywords"], rows["padding"]
    assert keywords.flagged and keywords.attributed == 6
    assert keywords.inserted_push == pytest.approx(math.log(4))
    assert keywords.inserted_effect == "the inserted text moved the judge's log-odds by +1.4 toward the attacked answer"
    assert padding.inserted_push == pytest.approx(0.0)  # filler without the keyword moves nothing
    assert padding.inserted_effect is not None and padding.inserted_effect.startswith("the inserted text did not")
    # report.json carries it; the HTML robustness table shows it.
    saved = {row.attack: row for row in load_report(tmp_path / "eval").robustness}
    assert saved["keywords"].inserted_push == pytest.approx(math.log(4))
    table = parse((tmp_path / "eval" / "report.html").read_text(), frozenset()).tables["robustness-table"]
    row = next(r for r in table if r and r[0].startswith("Keyword stuffing"))
    assert row[5] == "+1.39" and "moved the judge's log-odds by +1.4 toward the attacked answer" in row[6]


def test_a_judge_that_ignores_content_records_no_push(tmp_path: Path) -> None:
    def level(request: ScoreRequest) -> list[float]:
        return [math.log(0.5), math.log(0.5)]

    judge = ScriptedBackend(scores=level, name="judge")
    summary = evaluate(config(tmp_path, ["comply"]), progress=False, backends=factory(judge))
    found = records(tmp_path / "eval")
    assert len(found) == 6 * len(attack_ids())
    for r in found.values():
        assert r.attribution is not None and r.attribution.inserted == pytest.approx(0.0)
    assert all(row.inserted_effect and "did not move" in row.inserted_effect for row in summary.report.robustness)


def test_old_attack_records_without_the_field_still_load(tmp_path: Path) -> None:
    old = {
        "id": "r1",
        "attack": "keywords",
        "original_violation": 0.9,
        "attacked_violation": 0.05,
        "p_attacked_better": 0.8,
        "disagreed": False,
        "picked_a": [True, False],
    }
    (tmp_path / "robustness.jsonl").write_text(json.dumps(old) + "\n")
    (loaded,) = read_all(EvalStore(tmp_path).robustness())
    assert loaded.attribution is None and loaded.p_attacked_better == 0.8
    fields = {"attack": "keywords", "name": "Keyword", "n": 1, "pointwise_gain": 0.1, "pairwise_win": None}
    row = AttackRow.model_validate(fields | {"flagged": False})  # a report.json written before the push was measured
    assert row.inserted_push is None and row.attributed == 0


def test_the_html_escapes_the_inserted_text_phrase() -> None:
    report = full_report()
    report.robustness[0] = report.robustness[0].model_copy(
        update={"attributed": 3, "inserted_push": 2.1, "rest": 0.0, "inserted_effect": f"moved {SCRIPT}"}
    )
    page = render_html(report)
    assert SCRIPT not in page and "moved &lt;script&gt;alert(1)&lt;/script&gt;" in page
    table = parse(page, frozenset()).tables["robustness-table"]
    assert table[1][5] == "+2.10" and table[2][5] == "\u2013" and table[2][6] == "not measured"


def test_attack_parts_are_exactly_what_the_attack_inserted() -> None:
    answer = "Sure. Here it is."
    for attack in attack_ids():
        before, after = attack_parts(answer, attack)
        assert before + answer + after == apply_attack(answer, attack) and (before or after)


class CountingJudge:
    """A pair judge that prefers the longer first response and counts the pairs it is asked about."""

    def __init__(self, judge: PairJudge) -> None:
        self.judge = judge
        self.settings = judge.settings
        self.asked: list[int] = []

    @property
    def model(self) -> str:
        return self.judge.model

    def compare(self, pairs: Sequence[Pair]) -> list[Comparison]:
        self.asked.append(len(pairs))
        return self.judge.compare(pairs)


def test_cutting_out_the_inserted_text_of_several_attacks_judges_the_shared_variant_once() -> None:
    judge = CountingJudge(Judge(ScriptedBackend(scores=judge_scores(gullible))))
    chat = [{"role": "user", "content": "hi"}]
    answer = "Sure, here it is."
    items = []
    for attack in ("keywords", "padding", "injection"):
        before, after = attack_parts(answer, attack)
        text = before + answer + after
        items.append((Pair(chat, text, answer, PRINCIPLES), [Cut(first=(Span(len(before + answer), len(text)),))]))
    found = occlude(judge, items)
    assert judge.asked == [3 + 1]  # one batched call; the three cuts all leave (answer, answer)
    assert [f.pushes[0] for f in found] == pytest.approx([math.log(4), 0.0, 0.0])
