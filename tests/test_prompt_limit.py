"""``--limit N``: a seeded sample spread over kinds and harm categories, stable on resume, growth and shards."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from constitution.taxonomy import HARM_TAGS
from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import generate
from engine.sources import load_prompts, open_prompts, sample_ids

CATEGORIES = ("cyber", "privacy", "weapons")


def write_set(path: Path, ids: list[str]) -> str:
    """A harmful prompt per id, its category by the id's number (so a category's rows are not together)."""
    with path.open("w", encoding="utf-8") as handle:
        for prompt_id in ids:
            number = int(prompt_id.lstrip("abcdefghijklmnopqrstuvwxyz-"))
            row = {"id": prompt_id, "prompt": f"question {prompt_id}", "kind": "harmful"}
            handle.write(json.dumps(row | {"category": CATEGORIES[number % 3]}) + "\n")
    return str(path)


def ids_of(source: str, limit: int, seed: int = 0) -> list[str]:
    return [item.id for item in load_prompts(source, limit=limit, seed=seed)]


def test_a_limit_of_the_mixed_set_holds_every_kind_and_one_harmful_prompt_per_category() -> None:
    items = load_prompts("mixed", limit=8)
    kinds = Counter(item.kind for item in items)
    assert set(kinds) == {"harmful", "benign", "near_miss"}
    harmful = [item.category for item in items if item.kind == "harmful"]
    assert len(set(harmful)) == len(harmful) >= 4  # no category twice before every category once


def test_a_larger_limit_follows_the_sizes_of_kinds_and_categories() -> None:
    everything = Counter(item.kind for item in load_prompts("mixed"))
    items = load_prompts("mixed", limit=200)
    for kind, count in Counter(item.kind for item in items).items():
        assert abs(count - 200 * everything[kind] / sum(everything.values())) <= 2, kind
    held_out = load_prompts("eval-redteam", limit=30)  # 5 prompts in each of the 15 harm categories
    assert Counter(item.category for item in held_out) == dict.fromkeys(HARM_TAGS, 2)


def test_the_choice_depends_on_the_seed_and_the_ids_not_on_row_order(tmp_path: Path) -> None:
    ids = [f"p{i:03d}" for i in range(60)]
    forward = write_set(tmp_path / "forward.jsonl", ids)
    backward = write_set(tmp_path / "backward.jsonl", ids[::-1])
    chosen = ids_of(forward, 12)
    assert chosen != ids[:12] and set(chosen) == set(ids_of(backward, 12))
    assert chosen == ids_of(forward, 12)  # the same seed: the same prompts (a resumed run)
    assert chosen == sorted(chosen)  # given back in the order of the file
    assert Counter(int(i[1:]) % 3 for i in chosen) == {0: 4, 1: 4, 2: 4}
    assert len({tuple(ids_of(forward, 12, seed)) for seed in range(4)}) == 4  # each seed its own sample


def test_a_larger_limit_keeps_what_a_smaller_one_chose() -> None:
    previous: set[str] = set()
    for limit in (1, 2, 3, 5, 8, 13, 40, 100):
        chosen = set(ids_of("mixed", limit, seed=3))
        assert len(chosen) == limit and previous <= chosen, limit
        previous = chosen


def test_a_grown_file_keeps_most_of_the_prompts_chosen_before(tmp_path: Path) -> None:
    ids = [f"p{i:03d}" for i in range(60)]
    small = ids_of(write_set(tmp_path / "small.jsonl", ids), 12)
    grown = ids_of(write_set(tmp_path / "grown.jsonl", [f"new-{i}" for i in range(3)] + ids), 12)
    assert len(set(small) & set(grown)) >= 10  # taking the first 12 rows would keep only 9


def test_the_stream_gives_what_load_gives_under_a_limit(tmp_path: Path) -> None:
    source = write_set(tmp_path / "s.jsonl", [f"p{i:03d}" for i in range(40)])
    for limit, seed in ((0, 0), (7, 0), (7, 5), (40, 1), (100, 0)):
        stream = open_prompts(source, limit=limit, seed=seed)
        expected = load_prompts(source, limit=limit, seed=seed)
        assert list(stream) == expected and list(stream.ids()) == [item.id for item in expected]
        assert len(stream) == len(expected) == min(limit, 40)


def test_sample_ids_chooses_as_limit_does() -> None:
    items = load_prompts("helpful")
    chosen = sample_ids(((item.id, item.kind, item.category) for item in items), 10, seed=2)
    assert chosen == set(ids_of("helpful", 10, seed=2))
    assert sample_ids([("a", None, None)], 5) == {"a"} and sample_ids([("a", None, None)], 0) == set()


def run_ids(out: Path) -> set[str]:
    return {json.loads(line)["id"] for line in (out / "trajectories.jsonl").read_text().splitlines()}


def test_generate_takes_its_sample_with_its_seed(tmp_path: Path) -> None:
    def run(out: str, seed: int) -> set[str]:
        fields = {"prompts": "mixed", "limit": 6, "seed": seed, "revisions": 0, "judge": False}
        generate(GenerateConfig.model_validate({"out": tmp_path / out, "model": "scripted"} | fields), progress=False)
        return run_ids(tmp_path / out)

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    assert first == again and first != other
    kinds = {item.id: item.kind for item in load_prompts("mixed")}
    assert {kinds[i] for i in first} == {kinds[i] for i in other} == {"harmful", "benign", "near_miss"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"id": "a", "prompt": "x", "category": "cybersecurity"},
            r"p\.jsonl:2: category: 'cybersecurity' is not a tag",
        ),
        ({"id": "b", "prompt": "x", "kind": "redteam"}, r"p\.jsonl:2: kind: must be one of harmful, benign, near_miss"),
        ({"id": "p000", "prompt": "again"}, r"p\.jsonl:2: id 'p000' is already used on line 1"),
    ],
)
def test_generate_refuses_a_bad_prompt_file_in_one_line(tmp_path: Path, row: dict[str, str], message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "p000", "prompt": "fine", "category": "cyber"}) + "\n" + json.dumps(row) + "\n")
    args = ["generate", "--model", "scripted", "--prompts", str(path), "--out", str(tmp_path / "run"), "--no-judge"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path}") and re.search(message, line), line
    assert not (tmp_path / "run" / "trajectories.jsonl").exists()
