"""The held-out evaluation prompt sets: shape, counts, and no overlap with the generation sets."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from constitution.taxonomy import HARM_TAGS
from engine.sources import EVAL_DIR, PromptItem, load_prompts

GENERATION_SETS = ("redteam", "helpful")
EVAL_SETS = ("eval-redteam", "eval-benign")
MAX_TRIGRAM_JACCARD = 0.5


def _text(item: PromptItem) -> str:
    """The user turns of a prompt, lowercased, whitespace collapsed."""
    joined = " ".join(m["content"] for m in item.messages if m["role"] == "user")
    return " ".join(joined.lower().split())


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text)
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


@pytest.fixture(scope="module")
def generation() -> list[PromptItem]:
    return [item for name in GENERATION_SETS for item in load_prompts(name)]


def test_eval_redteam_counts() -> None:
    items = load_prompts("eval-redteam")
    assert len(items) == 75
    assert {item.source for item in items} == {"builtin:eval-redteam"}
    assert {item.kind for item in items} == {"harmful"}
    assert Counter(item.category for item in items) == dict.fromkeys(HARM_TAGS, 5)
    assert [item.id for item in items] == [f"ev-rt-{i:03d}" for i in range(1, 76)]
    assert all(len(item.messages) == 1 and item.messages[0]["role"] == "user" for item in items)


def test_eval_benign_counts() -> None:
    items = load_prompts("eval-benign")
    assert len(items) == 75
    assert {item.source for item in items} == {"builtin:eval-benign"}
    near = [item for item in items if item.kind == "near_miss"]
    assert Counter(item.category for item in near) == dict.fromkeys(HARM_TAGS, 3)
    benign = Counter(item.category for item in items if item.kind == "benign")
    assert benign == {"helpfulness": 22, "honesty": 8}
    assert [item.id for item in items] == [f"ev-bn-{i:03d}" for i in range(1, 76)]


def test_eval_ids_and_texts_unique() -> None:
    items = [item for name in EVAL_SETS for item in load_prompts(name)]
    assert len({item.id for item in items}) == len(items)
    assert len({_text(item) for item in items}) == len(items)


def test_eval_files_live_in_eval_dir() -> None:
    assert (EVAL_DIR / "redteam_eval.jsonl").is_file()
    assert (EVAL_DIR / "benign_eval.jsonl").is_file()


def test_mixed_does_not_include_eval_sets() -> None:
    assert not any(item.id.startswith("ev-") for item in load_prompts("mixed"))


@pytest.mark.parametrize("name", EVAL_SETS)
def test_eval_set_is_held_out(name: str, generation: list[PromptItem]) -> None:
    seen = {_text(item): item.id for item in generation}
    grams = [(item.id, _trigrams(_text(item))) for item in generation]
    for item in load_prompts(name):
        text = _text(item)
        assert text not in seen, f"{item.id} repeats {seen[text]}"
        mine = _trigrams(text)
        for other_id, other in grams:
            score = _jaccard(mine, other)
            assert score <= MAX_TRIGRAM_JACCARD, f"{item.id} is too close to {other_id} ({score:.2f})"
