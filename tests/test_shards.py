"""Many workers: ``cai generate --shard I/N`` slices the prompts, ``cai merge`` puts the shards back together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datasets import load_from_disk

from engine.backends.base import Backend
from engine.backends.scripted import ScriptedBackend, longer_is_better
from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import Summary, generate
from engine.merge import MergeError, merge
from engine.records import Shard
from engine.rundir import RunDirError


def write_prompts(path: Path, n: int, text: str = "how do I do thing") -> Path:
    with path.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"p{i:03d}", "prompt": f"Question {i}: {text} {i}?"}) + "\n")
    return path


def scripted(spec: str, **_: object) -> Backend:
    """Any model name loads a scripted backend of that name (to make runs with 'other' models)."""
    return ScriptedBackend(scores=longer_is_better, name=spec)


def run(out: Path, prompts: Path, **fields: Any) -> Summary:
    base: dict[str, Any] = {"out": out, "model": "scripted", "prompts": str(prompts), "revisions": 1}
    return generate(GenerateConfig.model_validate(base | fields), progress=False, backends=scripted)


def rows(folder: Path, name: str = "trajectories.jsonl") -> dict[str, dict[str, Any]]:
    """The rows of a run file by id (timings dropped: they differ between any two runs)."""
    found: dict[str, dict[str, Any]] = {}
    for line in (folder / name).read_text().splitlines():
        row = json.loads(line)
        row.pop("timings", None)
        assert row["id"] not in found, f"{row['id']} written twice"
        found[row["id"]] = row
    return found


def test_shards_partition_the_prompts_exactly_and_stay_put_when_the_file_grows(tmp_path: Path) -> None:
    ids = [f"p{i:03d}" for i in range(200)]
    for count in (1, 2, 3, 4, 7):
        shards = [Shard(index, count) for index in range(1, count + 1)]
        owners = [[s for s in shards if s.holds(i)] for i in ids]
        assert all(len(o) == 1 for o in owners), "every prompt is in exactly one shard"
        sizes = [sum(1 for o in owners if o[0] == s) for s in shards]
        assert min(sizes) > 0.5 * len(ids) / count  # roughly balanced


def test_a_prompt_keeps_its_shard_when_the_file_grows(tmp_path: Path) -> None:
    small = write_prompts(tmp_path / "small.jsonl", 12)
    grown = tmp_path / "grown.jsonl"
    extra = [json.dumps({"id": f"new{i}", "prompt": f"New question {i}"}) for i in range(5)]
    grown.write_text("\n".join([extra[0], *small.read_text().splitlines(), *extra[1:]]) + "\n")
    run(tmp_path / "a", small, shard="2/3", revisions=0, judge=False)
    run(tmp_path / "b", grown, shard="2/3", revisions=0, judge=False)
    before, after = set(rows(tmp_path / "a")), set(rows(tmp_path / "b"))
    assert before == {i for i in after if i.startswith("p")}  # chosen by id, not by position


def test_shard_runs_take_disjoint_slices_whose_union_is_every_prompt(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 30)
    taken = []
    for index in (1, 2, 3):
        summary = run(tmp_path / f"s{index}", prompts, shard=f"{index}/3", limit=24, judge=False)
        got = set(rows(tmp_path / f"s{index}"))
        assert summary.prompts == summary.rows == summary.generated == len(got) > 0 and summary.shard == f"{index}/3"
        taken.append(got)
    whole = run(tmp_path / "whole", prompts, limit=24, judge=False)  # the same --limit, unsharded
    assert whole.rows == 24 and set().union(*taken) == set(rows(tmp_path / "whole"))  # --limit first, then the shard
    assert sum(map(len, taken)) == 24  # pairwise disjoint
    again = run(tmp_path / "again", prompts, shard="2/3", limit=24, judge=False, chunk_size=5)
    assert set(rows(tmp_path / "again")) == taken[1] and again.rows == len(taken[1])  # deterministic
    assert "shard 2/3" in (tmp_path / "s2" / "README.md").read_text()


def test_a_shard_resumes_like_any_run_and_refuses_another_shard(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 20)
    out = tmp_path / "s1"
    first = run(out, prompts, shard="1/2", chunk_size=3)
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    (out / "trajectories.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])  # killed mid-write
    labels = (out / "labels.jsonl").read_text().splitlines()  # labels of a chunk follow its rows
    (out / "labels.jsonl").write_text(
        "".join(line + "\n" for line in labels if json.loads(line)["id"] in lines[0] + lines[1])
    )
    resumed = run(out, prompts, shard="1/2", chunk_size=3)
    assert resumed.skipped == 2 and resumed.generated == first.rows - 2 and resumed.prompts == first.rows
    assert set(rows(out)) == {f"p{i:03d}" for i in range(20) if Shard(1, 2).holds(f"p{i:03d}")}
    assert rows(out, "labels.jsonl").keys() == rows(out).keys()
    for other in ("2/2", "1/3", None):
        with pytest.raises(RunDirError, match=f"shard: 1/2 \\(in the folder\\) vs {other} \\(now\\)"):
            run(out, prompts, shard=other)


def test_run_folders_from_before_shards_still_resume(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 4)
    out = tmp_path / "old"
    run(out, prompts, limit=2, judge=False)
    manifest = json.loads((out / "run.json").read_text())
    del manifest["shard"], manifest["merged_from"]  # what earlier versions wrote
    (out / "run.json").write_text(json.dumps(manifest))
    summary = run(out, prompts, judge=False)
    assert summary.skipped == 2 and summary.generated == 2


def test_merge_of_all_shards_equals_one_unsharded_run(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 16)
    whole = run(tmp_path / "whole", prompts, chunk_size=16)
    for index in (1, 2, 3):  # another chunking: each row's outcome depends on its own id and the seed only
        run(tmp_path / f"s{index}", prompts, shard=f"{index}/3", chunk_size=2)
    before = {p: p.read_bytes() for p in tmp_path.glob("s*/*") if p.is_file()}
    result = CliRunner().invoke(
        cli, ["merge", *(str(tmp_path / f"s{i}") for i in (3, 1, 2)), "--out", str(tmp_path / "merged")]
    )
    assert {p: p.read_bytes() for p in tmp_path.glob("s*/*") if p.is_file()} == before  # the shards are untouched
    assert result.exit_code == 0, result.output
    assert f"16 rows from 3 runs in {tmp_path / 'merged'}" in result.output
    merged = tmp_path / "merged"
    assert rows(merged) == rows(tmp_path / "whole")  # same ids, same rows
    assert rows(merged, "labels.jsonl") == rows(tmp_path / "whole", "labels.jsonl")
    a, b = load_from_disk(str(merged / "dataset")), load_from_disk(str(tmp_path / "whole" / "dataset"))
    for split in ("preferences", "sft"):
        assert sorted(a[split].to_list(), key=lambda r: r["id"]) == sorted(b[split].to_list(), key=lambda r: r["id"])
    assert len(a["preferences"]) == whole.pairs
    manifest = json.loads((merged / "run.json").read_text())
    assert manifest["shard"] is None
    assert [(m["shard"], m["rows"]) for m in manifest["merged_from"]] == [
        (f"{i}/3", len(rows(tmp_path / f"s{i}"))) for i in (3, 1, 2)
    ]
    card = (merged / "README.md").read_text()
    assert "## Merged runs" in card and f"| `{tmp_path / 's1'}` | `{prompts}` | 1/3 |" in card
    assert "| prompts | 16 |" in card and "## Label quality" in card and "Incomplete" not in card
    assert (merged / "constitution.yaml").read_bytes() == (tmp_path / "s1" / "constitution.yaml").read_bytes()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"constitution": "helpfulness"}, "constitution: default"),
        ({"model": "other"}, "policy: scripted"),
        ({"critic_model": "other"}, "critic: scripted"),
        ({"revisions": 2}, "revisions: 1"),
        ({"temperature": 0.0}, "temperature"),
        ({"seed": 1}, "seed"),
        ({"judge_model": "other"}, "judge: scripted"),
        ({"judge_principles": 2}, "judge principles: 1"),
        ({"judge": False}, "is labelled by the judge and"),
    ],
)
def test_merge_refuses_runs_made_differently(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 6)
    one, two = tmp_path / "one", tmp_path / "two"
    run(one, prompts, shard="1/2")
    run(two, prompts, shard="2/2", **change)
    with pytest.raises(MergeError, match=r"cannot merge|labelled") as caught:
        merge([one, two], tmp_path / "merged")
    message = str(caught.value)
    assert field in message and str(one) in message and str(two) in message
    assert not (tmp_path / "merged").exists()


def test_missing_shards_are_refused_unless_allowed_and_then_named(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 12)
    dirs = [tmp_path / f"s{i}" for i in (1, 2, 4)]
    for folder, index in zip(dirs, (1, 2, 4), strict=True):
        run(folder, prompts, shard=f"{index}/4", judge=False)
    args = ["merge", *map(str, dirs), "--out", str(tmp_path / "m")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and f"shard 3/4 of {prompts} missing" in refused.output
    assert "--allow-partial" in refused.output and not (tmp_path / "m").exists()
    partial = CliRunner().invoke(cli, [*args, "--allow-partial"])
    assert partial.exit_code == 0, partial.output
    assert f"warning: incomplete, shards missing: 3/4 of {prompts}" in partial.output
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"**Incomplete**: shard 3/4 of {prompts} missing." in card
    assert set(rows(tmp_path / "m")) == set().union(*(rows(d).keys() for d in dirs))


def test_merges_of_merges_count_their_shards(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 10)
    for index in (1, 2, 3):
        run(tmp_path / f"s{index}", prompts, shard=f"{index}/3")
    merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "m12", allow_partial=True)
    with pytest.raises(MergeError, match="given twice"):
        merge([tmp_path / "m12", tmp_path / "s2", tmp_path / "s3"], tmp_path / "bad")
    summary = merge([tmp_path / "m12", tmp_path / "s3"], tmp_path / "all")
    assert summary.missing == [] and summary.rows == 10 and [r.shard for r in summary.runs] == ["1/3", "2/3", "3/3"]


def test_overlapping_runs_are_refused_unless_their_rows_are_the_same(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    run(tmp_path / "whole", prompts)
    run(tmp_path / "half", prompts, shard="1/2")
    same = merge([tmp_path / "whole", tmp_path / "half"], tmp_path / "m", allow_partial=True)
    assert same.rows == 8 and same.duplicates == len(rows(tmp_path / "half"))
    assert rows(tmp_path / "m", "labels.jsonl") == rows(tmp_path / "whole", "labels.jsonl")

    other = write_prompts(tmp_path / "q.jsonl", 8, text="something else")
    run(tmp_path / "other", other)
    with pytest.raises(MergeError, match=r"prompt 'p000' is in .*whole and in .*other with different rows"):
        merge([tmp_path / "whole", tmp_path / "other"], tmp_path / "m2")
    assert not (tmp_path / "m2" / "run.json").exists() and not list((tmp_path / "m2").glob(".*merge"))

    run(tmp_path / "quarter", prompts, shard="1/4")
    with pytest.raises(MergeError, match="different splits"):
        merge([tmp_path / "half", tmp_path / "quarter"], tmp_path / "m3", allow_partial=True)


def test_merge_output_folder_rules(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 4)
    run(tmp_path / "a", prompts, judge=False)
    with pytest.raises(MergeError, match="one of the runs"):
        merge([tmp_path / "a"], tmp_path / "a")
    with pytest.raises(MergeError, match="given twice"):
        merge([tmp_path / "a", tmp_path / "a"], tmp_path / "m")
    with pytest.raises(RunDirError, match="holds no cai run"):
        merge([tmp_path / "a", tmp_path], tmp_path / "m")
    merge([tmp_path / "a"], tmp_path / "m")
    with pytest.raises(RunDirError, match="holds a run already"):
        merge([tmp_path / "a"], tmp_path / "m")
    assert merge([tmp_path / "a"], tmp_path / "m", force=True).rows == 4
    # A merged folder is a run: generating into it again is refused as another run's settings would be.
    with pytest.raises(RunDirError, match="merged_from: a merge of 1 runs"):
        run(tmp_path / "m", prompts, judge=False)


def test_a_shard_stopped_mid_write_is_not_merged_until_rerun(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 6)
    run(tmp_path / "a", prompts, judge=False)
    with (tmp_path / "a" / "trajectories.jsonl").open("a") as handle:
        handle.write('{"id": "torn')
    with pytest.raises(RunDirError, match="run its command again"):
        merge([tmp_path / "a"], tmp_path / "m")
    assert not list((tmp_path / "m").glob(".*merge"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0/4", "counted from 1 to N, so use 1/4 to 4/4"),
        ("5/4", "counted from 1 to N, so use 1/4 to 4/4"),
        ("1/0", "N must be at least 1"),
        ("abc", "expected I/N"),
        ("2", "expected I/N"),
    ],
)
def test_bad_shard_values_are_usage_errors(tmp_path: Path, value: str, message: str) -> None:
    result = CliRunner().invoke(
        cli, ["generate", "--out", str(tmp_path / "r"), "--model", "scripted", "--shard", value]
    )
    assert result.exit_code == 2 and "Invalid value for '--shard'" in result.output and message in result.output
    assert not (tmp_path / "r").exists()


def test_shard_in_a_config_file(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 6)
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(f"model: scripted\nprompts: {prompts}\nshard: 2/2\nrevisions: 0\n")
    bad.write_text("model: scripted\nshard: 3/2\n")
    result = CliRunner().invoke(cli, ["generate", "--config", str(good), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert set(rows(tmp_path / "r")) == {f"p{i:03d}" for i in range(6) if Shard(2, 2).holds(f"p{i:03d}")}
    result = CliRunner().invoke(cli, ["generate", "--config", str(bad), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "shard" in result.output and "1/2 to 2/2" in result.output
