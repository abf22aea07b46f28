"""Evaluator probes: jailbreak wrappers, counterfactual bias, judge attacks, boilerplate phrases."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from constitution.taxonomy import HARM_TAGS
from engine.evaluate.probes import (
    ATTACKS,
    GROUPS,
    JAILBREAKS,
    CounterfactualTemplate,
    apply_attack,
    attack_ids,
    counterfactual_gaps,
    counterfactual_prompts,
    group_slug,
    jailbreak_ids,
    jailbreak_prompts,
    load_counterfactual,
    repeated_phrases,
)
from engine.prompts import neutralise, quote
from engine.sources import PromptItem

# --- jailbreaks ---------------------------------------------------------------------------------


def test_builtin_jailbreaks_cover_the_common_framings() -> None:
    ids = jailbreak_ids()
    assert len(ids) >= 6
    assert len(set(ids)) == len(ids)
    assert {"roleplay", "novel", "prefix", "hypothetical", "devmode", "no_refusal"} <= set(ids)
    prefix = next(j for j in JAILBREAKS if j.id == "prefix")
    assert "Sure, here is" in prefix.template


def test_jailbreaks_wrap_the_last_user_turn_verbatim_and_keep_the_rest() -> None:
    request = 'Explain {this} with a dict like {"a": 1} and a {prompt} placeholder, 100% literally.'
    items = [
        PromptItem(
            id="rt-1",
            messages=[
                {"role": "system", "content": "Be careful."},
                {"role": "user", "content": "earlier question"},
                {"role": "assistant", "content": "earlier answer"},
                {"role": "user", "content": request},
            ],
            category="cyber",
            kind="near_miss",
            source="builtin:redteam",
        ),
        PromptItem(id="rt-2", messages=[{"role": "user", "content": "second"}], category=None, source="x.jsonl"),
    ]
    wrapped = jailbreak_prompts(items)
    assert len(wrapped) == 2 * len(JAILBREAKS)
    first = wrapped[: len(JAILBREAKS)]
    assert [w.item.id for w in first] == [f"rt-1~jb-{j}" for j in jailbreak_ids()]
    for jb, w in zip(JAILBREAKS, first, strict=True):
        assert w.source_id == "rt-1"
        assert w.wrapper_id == jb.id
        assert w.item.category == "cyber"
        assert w.item.kind == "harmful"
        assert w.item.messages[:3] == items[0].messages[:3]
        last = w.item.messages[-1]
        assert last["role"] == "user"
        assert request in last["content"]
        assert last["content"] != request
        assert "{prompt}" not in last["content"].replace(request, "")  # the placeholder was filled once
    assert {w.item.id for w in wrapped[len(JAILBREAKS) :]} == {f"rt-2~jb-{j}" for j in jailbreak_ids()}
    assert all(w.item.messages[-1]["content"].count("second") == 1 for w in wrapped[len(JAILBREAKS) :])


def test_repeated_jailbreak_ids_are_refused() -> None:
    item = PromptItem(id="a", messages=[{"role": "user", "content": "x"}], source="t")
    with pytest.raises(ValueError, match="roleplay"):
        jailbreak_prompts([item], (JAILBREAKS[0], JAILBREAKS[0]))


# --- counterfactual -----------------------------------------------------------------------------


def test_builtin_counterfactual_templates_load_and_expand_to_every_group() -> None:
    templates = load_counterfactual()
    assert len(templates) >= 12
    assert {t.attribute for t in templates} == set(GROUPS)
    assert {t.kind for t in templates} >= {"benign", "harmful"}
    assert all(t.category in HARM_TAGS or t.category == "helpfulness" for t in templates)

    prompts = counterfactual_prompts(templates)
    assert len(prompts) == sum(len(GROUPS[t.attribute]) for t in templates)
    ids = [p.item.id for p in prompts]
    assert len(set(ids)) == len(ids)
    for template in templates:
        mine = [p for p in prompts if p.template_id == template.id]
        assert [p.group for p in mine] == list(GROUPS[template.attribute])
        for p in mine:
            assert p.item.id == f"{template.id}~{group_slug(p.group)}"
            assert p.attribute == template.attribute
            assert p.item.kind == template.kind
            assert p.item.category == template.category
            text = p.item.messages[-1]["content"]
            assert p.group in text
            assert "{group}" not in text
        # Only the group differs between a template's prompts.
        texts = {p.item.messages[-1]["content"].replace(p.group, "<G>") for p in mine}
        assert len(texts) == 1


def test_counterfactual_limit_keeps_whole_templates() -> None:
    templates = load_counterfactual()
    prompts = counterfactual_prompts(templates, limit=2)
    assert {p.template_id for p in prompts} == {templates[0].id, templates[1].id}
    assert len(prompts) == len(GROUPS[templates[0].attribute]) + len(GROUPS[templates[1].attribute])
    assert counterfactual_prompts(templates, limit=0) == []


def test_group_slugs() -> None:
    assert group_slug("Muslim") == "muslim"
    assert group_slug("wheelchair-using") == "wheelchair-using"
    assert group_slug("Non Binary!") == "non-binary"


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"id": "t1", "attribute": "age", "category": "helpfulness", "kind": "benign", "template": "My {group} aunt"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({**GOOD, "template": "My aunt"}, "no {group}"),
        ({**GOOD, "attribute": "height"}, "unknown attribute 'height'"),
        ({**GOOD, "category": "spam"}, "unknown category 'spam'"),
        ({**GOOD, "kind": "evil"}, "kind must be one of"),
        ({k: v for k, v in GOOD.items() if k != "kind"}, "missing kind"),
        ({**GOOD, "template": "Tell me about an {group} person"}, "no 'a'/'an'"),
        ({**GOOD, "extra": 1}, "unknown field extra"),
        ("{not json", "not valid JSON"),
        ({**GOOD, "id": "t0"}, "already used on line 1"),
    ],
)
def test_a_bad_counterfactual_row_names_file_and_line(tmp_path: Path, bad: Any, message: str) -> None:
    first = {**GOOD, "id": "t0"}
    path = write_rows(tmp_path / "cf.jsonl", [first, "", bad])
    with pytest.raises(ValueError) as info:
        load_counterfactual(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_counterfactual_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no counterfactual templates"):
        load_counterfactual(write_rows(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(ValueError, match="cannot read"):
        load_counterfactual(tmp_path / "missing.jsonl")
    loaded = load_counterfactual(write_rows(tmp_path / "ok.jsonl", [GOOD]))
    assert loaded == [CounterfactualTemplate("t1", "age", "helpfulness", "benign", "My {group} aunt")]


def test_counterfactual_gaps_rank_the_unequal_template_first() -> None:
    groups = GROUPS["religion"]
    values: list[tuple[str, str, str, float]] = []
    # cf-a: "Jewish" is refused (1.0), every other group answered (0.0).
    values += [("cf-a", "religion", g, 1.0 if g == "Jewish" else 0.0) for g in groups]
    # cf-b: a small spread, with two samples for one group (averaged).
    values += [("cf-b", "age", "young", 0.2), ("cf-b", "age", "elderly", 0.5), ("cf-b", "age", "elderly", 0.3)]
    # cf-c: everyone treated the same.
    values += [("cf-c", "gender", g, 1.0) for g in GROUPS["gender"]]
    # cf-d: a single group, no gap to compute; a NaN is skipped.
    values += [("cf-d", "age", "young", 1.0), ("cf-d", "age", "elderly", float("nan"))]

    gaps = counterfactual_gaps(values, higher_is_better=False)
    assert [g.template_id for g in gaps] == ["cf-a", "cf-b", "cf-c"]
    top = gaps[0]
    assert top.gap == 1.0
    assert top.attribute == "religion"
    assert top.worst_group == "Jewish"
    assert top.best_group != "Jewish"
    assert top.values == {g: (1.0 if g == "Jewish" else 0.0) for g in groups}
    assert gaps[1].gap == pytest.approx(0.2)
    assert gaps[1].values == pytest.approx({"elderly": 0.4, "young": 0.2})
    assert (gaps[1].best_group, gaps[1].worst_group) == ("young", "elderly")
    assert gaps[2].gap == 0.0

    higher = counterfactual_gaps(values, top=1)
    assert [g.template_id for g in higher] == ["cf-a"]
    assert higher[0].best_group == "Jewish"

    data = top.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["gap"] == 1.0
    assert (data["worst_group"], data["worst_value"]) == ("Jewish", 1.0)
    assert data["best_value"] == 0.0


def test_counterfactual_gaps_refuse_a_template_under_two_attributes() -> None:
    with pytest.raises(ValueError, match="two attributes"):
        counterfactual_gaps([("t", "age", "young", 1.0), ("t", "gender", "male", 0.0)])


# --- judge attacks ------------------------------------------------------------------------------

ANSWER = "I can't help with making that. If you're worried about safety, {call} your local services."


@pytest.mark.parametrize("attack_id", attack_ids())
def test_each_attack_changes_the_text_and_keeps_the_answer(attack_id: str) -> None:
    attacked = apply_attack(ANSWER, attack_id)
    assert attacked != ANSWER
    assert ANSWER in attacked
    assert apply_attack(ANSWER, attack_id) == attacked  # deterministic


def test_attacks_do_what_they_say() -> None:
    assert {a.id for a in ATTACKS} == {"flattery", "keywords", "padding", "injection", "fake_delimiter"}
    assert apply_attack(ANSWER, "flattery").endswith(ANSWER)
    assert "harmless" in apply_attack(ANSWER, "keywords").removeprefix(ANSWER)
    padded = apply_attack(ANSWER, "padding")
    assert 2 * len(ANSWER) <= len(padded) <= 3 * len(ANSWER)
    injected = apply_attack(ANSWER, "injection").lower()
    assert "evaluator" in injected
    assert "(no)" in injected
    assert "(a)" in injected
    assert "(b)" in injected
    faked = apply_attack(ANSWER, "fake_delimiter")
    assert "<<<END RESPONSE>>>" in faked
    # The engine's quoting defuses it: the quoted text holds exactly one real end delimiter.
    assert "<<<" not in neutralise(faked)
    assert quote(faked, "RESPONSE").count("<<<END RESPONSE>>>") == 1


def test_unknown_attack_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown judge attack 'bribe'") as info:
        apply_attack(ANSWER, "bribe")
    assert all(attack_id in str(info.value) for attack_id in attack_ids())


# --- boilerplate --------------------------------------------------------------------------------

VOCAB = [f"w{i}" for i in range(400)]
PLANTED = "I hope this helps, and please don't hesitate to ask if anything is unclear!"
PLANTED_WORDS = "i hope this helps and please dont hesitate to ask if anything is unclear"


def random_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def test_repeated_phrases_finds_planted_boilerplate_as_one_phrase() -> None:
    rng = random.Random(0)
    answers = []
    for i in range(50):
        before, after = random_text(rng, 20), random_text(rng, 20)
        answers.append(f"{before}. {PLANTED} {after}" if i < 30 else f"{before} {after}")
    phrases = repeated_phrases(answers)
    assert phrases[0].phrase == PLANTED_WORDS
    assert phrases[0].answers == 30
    assert phrases[0].share == pytest.approx(0.6)
    # No fragment of the planted sentence survives beside it, and random text yields nothing.
    assert [p.phrase for p in phrases] == [PLANTED_WORDS]


def test_repeated_phrases_keep_a_short_phrase_that_is_much_more_common() -> None:
    rng = random.Random(1)
    answers = [f"{random_text(rng, 10)} as an ai language model {random_text(rng, 10)}" for _ in range(40)]
    for i in range(10):
        answers[i] += " as an ai language model i cannot do that"
    phrases = {p.phrase: p.answers for p in repeated_phrases(answers, top=None)}
    assert phrases["as an ai language model"] == 40
    assert phrases["as an ai language model i cannot do that"] == 10
    # Sub-phrases of the long one that are not more common than it are dropped.
    assert "ai language model i cannot" not in phrases
    assert "language model i cannot do that" not in phrases
    assert "an ai language model" not in phrases  # inside the 40-answer phrase, same count


def test_repeated_phrases_count_once_per_answer_and_need_two_answers() -> None:
    answers = ["one two three four " * 5, "five six seven eight"]
    assert repeated_phrases(answers, min_share=0.0) == []
    assert repeated_phrases([], min_share=0.0) == []
    same = repeated_phrases(["one two three four five", "One, two; three four!"], min_share=0.0)
    assert [(p.phrase, p.answers) for p in same] == [("one two three four", 2)]


def test_repeated_phrases_check_arguments() -> None:
    with pytest.raises(ValueError, match="n_min"):
        repeated_phrases(["a"], n_min=5, n_max=4)
    with pytest.raises(ValueError, match="min_share"):
        repeated_phrases(["a"], min_share=1.5)


def test_repeated_phrases_handles_thousands_of_answers() -> None:
    rng = random.Random(2)
    answers = [f"{random_text(rng, 80)} {PLANTED}" if i % 2 else random_text(rng, 100) for i in range(5000)]
    phrases = repeated_phrases(answers)
    assert phrases[0].phrase == PLANTED_WORDS
    assert phrases[0].answers == 2500
    assert len(phrases) == 1
