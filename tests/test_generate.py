"""The generation pipeline end to end on the scripted backend: loop, streaming, resume, outputs, bad input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasets import load_from_disk

import constitution
from engine.backends.base import Chat, SamplingParams
from engine.backends.scripted import ScriptedBackend
from engine.cli import cli
from engine.config import GenerateConfig
from engine.critique import LoopSettings, clean_revision, finds_nothing_to_change, run_loop
from engine.generate import generate
from engine.judge.principles import round_principle
from engine.rundir import RunDir, RunDirError
from engine.sources import PromptItem, PromptSetError, load_prompts
from tests.interrupt import kill_mid_run

ROOT = Path(__file__).resolve().parent.parent


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            handle.write(
                json.dumps({"id": f"p{i:03d}", "prompt": f"Question number {i}: how do I do thing {i}?"}) + "\n"
            )
    return path


def config(tmp_path: Path, **fields: object) -> GenerateConfig:
    base: dict[str, object] = {"out": tmp_path / "run", "model": "scripted", "prompts": "redteam", "limit": 6}
    return GenerateConfig.model_validate(base | fields)


def items(n: int) -> list[PromptItem]:
    return [
        PromptItem(id=f"p{i}", messages=[{"role": "user", "content": f"question {i}"}], source="test") for i in range(n)
    ]


def test_loop_batches_each_step_and_records_rounds() -> None:
    backend = ScriptedBackend()
    rules = constitution.load("default")
    rows = run_loop(items(5), rules, backend, backend, LoopSettings(revisions=2))
    assert backend.calls == [5, 5, 5, 5, 5]  # initial, critique 1, revision 1, critique 2, revision 2: all batched
    assert [r.id for r in rows] == [f"p{i}" for i in range(5)]
    for row in rows:
        assert len(row.rounds) == 2
        assert all(r.principle_id in {p.id for p in rules.principles} for r in row.rounds)
        assert row.final == row.rounds[-1].revision
        assert row.constitution.hash == rules.content_hash
        assert set(row.timings) == {"initial", "critique_1", "revision_1", "critique_2", "revision_2"}


def test_rows_stop_early_when_the_critique_finds_nothing_to_change() -> None:
    def reply(chat: Chat, params: SamplingParams) -> str:
        text = chat[-1]["content"]
        if text.startswith("You review"):
            return "The answer is fine. No changes needed." if "question 0" in text else "Too vague; add detail."
        if text.startswith("You rewrite"):
            return "Revised response: a better answer"
        return "first answer"

    backend = ScriptedBackend(reply=reply)
    rows = run_loop(items(3), constitution.load("default"), backend, backend, LoopSettings(revisions=2))
    stopped = rows[0]
    assert [r.stopped for r in stopped.rounds] == [True] and stopped.final == "first answer"
    assert not stopped.revised
    other = rows[1]
    assert len(other.rounds) == 2 and other.final == "a better answer"  # the label was stripped
    assert other.rounds[0].changed and not other.rounds[1].changed  # same text again is no change
    assert backend.calls == [3, 3, 2, 2, 2]
    no_stop = run_loop(items(1), constitution.load("default"), backend, backend, LoopSettings(stop_early=False))
    assert len(no_stop[0].rounds) == 2 and not no_stop[0].rounds[0].stopped


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        ("<<<AUTO-RESPONSE>><<\n\nI'm sorry for the confusion.", "I'm sorry for the confusion."),
        ("<<<RESPONSE>>>\nA fine answer.\n<<<END RESPONSE>>>", "A fine answer."),
        ("Revised response: Use kill -9 <pid> to stop it.", "Use kill -9 <pid> to stop it."),
        ("Compare a << b and b >> c in C.", "Compare a << b and b >> c in C."),
    ],
)
def test_replies_lose_echoed_markers_but_keep_real_text(reply: str, cleaned: str) -> None:
    assert clean_revision(reply) == cleaned


@pytest.mark.parametrize(
    ("critique", "expected"),
    [
        ("The response is respectful and accurate. No changes needed.", True),
        ("no change is necessary here", True),
        ("Nothing needs to change.", True),
        ("There is nothing to fix in this answer.", True),
        ("The response gives step-by-step instructions; remove them.", False),
        ("Changes are needed: the tone is preachy.", False),
    ],
)
def test_nothing_to_change_detector(critique: str, expected: bool) -> None:
    assert finds_nothing_to_change(critique) is expected


def test_principle_sampling_is_seeded_weighted_and_stable() -> None:
    rules = constitution.load("default")
    first = [round_principle(rules, 7, f"row{i}", 1).id for i in range(300)]
    assert first == [round_principle(rules, 7, f"row{i}", 1).id for i in range(300)]
    assert first != [round_principle(rules, 8, f"row{i}", 1).id for i in range(300)]
    assert len(set(first)) > 10  # spread over many principles
    heavy = constitution.load("harmlessness")
    light = [p.id for p in heavy.principles if p.weight == 0.5]
    full = [p.id for p in heavy.principles if p.weight == 1.0]
    counts = [round_principle(heavy, 0, f"r{i}", 1).id for i in range(6000)]
    per_light = sum(counts.count(i) for i in light) / len(light)
    per_full = sum(counts.count(i) for i in full) / len(full)
    assert 0.35 < per_light / per_full < 0.65  # weight 0.5 is drawn about half as often as weight 1.0


def test_generate_writes_trajectories_judged_dataset_card_and_constitution(tmp_path: Path) -> None:
    summary = generate(config(tmp_path), progress=False)
    out = tmp_path / "run"
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 6 == summary.rows == summary.generated
    row = json.loads(lines[0])
    assert row["schema_version"] == 1 and row["constitution"]["hash"] == constitution.load("default").content_hash
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [label["id"] for label in labels] == [json.loads(line)["id"] for line in lines]
    data = load_from_disk(str(out / "dataset"))
    prefs = data["preferences"]
    assert len(prefs) == summary.pairs == 6
    for pair in prefs:
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"][0]["role"] == "assistant" and pair["rejected"][0]["role"] == "assistant"
        # The scripted judge prefers the longer response, in both orders, with probability 0.8.
        assert pair["label_source"] == "ai_judge" and pair["judge_model"] == "scripted"
        assert len(pair["chosen"][0]["content"]) >= len(pair["rejected"][0]["content"])
        assert pair["chosen_prob"] == pytest.approx(0.8) and pair["margin"] == pytest.approx(0.6)
        assert pair["chosen_from"] != pair["rejected_from"] and len(pair["judge_principles"]) == 1
    assert summary.labels is not None and summary.labels.labelled == 6 and summary.labels.disagreements == 0
    assert len(data["sft"]) == 6
    card = (out / "README.md").read_text()
    assert "sha256" in card and "ai_judge" in card and "| prompts | 6 |" in card and "## Label quality" in card
    assert constitution.load(out / "constitution.yaml").content_hash == row["constitution"]["hash"]


def test_without_the_judge_the_revision_is_assumed_better(tmp_path: Path) -> None:
    summary = generate(config(tmp_path, judge=False), progress=False)
    out = tmp_path / "run"
    assert not (out / "labels.jsonl").exists() and summary.labels is None
    data = load_from_disk(str(out / "dataset"))
    pair = data["preferences"][0]
    assert pair["label_source"] == "revision_assumed_better" and pair["chosen_prob"] is None
    assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
    assert data["sft"][0]["messages"][-1]["content"] == pair["chosen"][0]["content"]
    assert "revision_assumed_better" in (out / "README.md").read_text()


def test_a_judge_that_cannot_decide_gives_no_pairs_and_an_empty_loadable_split(tmp_path: Path) -> None:
    def factory(spec: str, **_: object) -> ScriptedBackend:
        return ScriptedBackend()  # uniform scores: every comparison a tie

    summary = generate(config(tmp_path), progress=False, backends=factory)
    data = load_from_disk(str(tmp_path / "run" / "dataset"))
    assert summary.pairs == len(data["preferences"]) == 0 and len(data["sft"]) == 6
    assert summary.labels is not None and summary.labels.dropped["tie"] == 6


def test_resume_labels_rows_written_before_a_crash_and_relabel_needs_force(tmp_path: Path) -> None:
    from engine.generate import label

    generate(config(tmp_path, judge=False), progress=False)  # rows without labels, as after a crash
    summary = generate(config(tmp_path), progress=False)
    assert summary.generated == 0 and summary.labels is not None and summary.labels.rows == 6
    out = tmp_path / "run"
    assert len((out / "labels.jsonl").read_text().splitlines()) == 6

    from engine.records import JudgeSettings

    def factory(spec: str, **_: object) -> ScriptedBackend:
        return ScriptedBackend(scores=lambda r: [0.0, -1.0], name=spec)  # always (A): both orders cancel

    with pytest.raises(RunDirError, match="other settings"):
        label(out, JudgeSettings(principles=2), progress=False, backends=factory)
    relabelled = label(out, JudgeSettings(principles=2), force=True, progress=False, backends=factory)
    assert relabelled.labelled == 6 and relabelled.pairs == 0 and relabelled.stats.disagreements > 0
    assert (out / "labels.1.jsonl").exists() and (out / "labels.1.json").exists()  # the old labels are kept
    again = label(out, JudgeSettings(principles=2), progress=False, backends=factory)
    assert again.labelled == 0  # nothing left to label
    assert json.loads((out / "labels.json").read_text())["settings"]["principles"] == 2


def test_rerun_resumes_without_duplicates_and_extends(tmp_path: Path) -> None:
    generate(config(tmp_path, limit=4), progress=False)
    again = generate(config(tmp_path, limit=4), progress=False)
    assert again.generated == 0 and again.skipped == 4
    more = generate(config(tmp_path, limit=7), progress=False)
    assert more.generated == 3 and more.rows == 7
    ids = [json.loads(line)["id"] for line in (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 7


def test_resume_from_a_file_counts_and_reads_only_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.generate as generate_module

    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, 10)
    with prompts.open("a") as handle:  # id-less rows repeating a conversation get the same suffixes on every run
        rows = ({"prompt": "again"}, {"prompt": "again"}, {"prompt": "  "})
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    every = [item.id for item in load_prompts(str(prompts))]
    assert len(every) == 12 and every[-1] == every[-2] + "-2"
    first = generate(config(tmp_path, prompts=str(prompts), limit=4, chunk_size=3), progress=False)
    assert (first.prompts, first.skipped, first.generated) == (4, 0, 4)
    made = {json.loads(line)["id"] for line in (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()}
    left = [prompt_id for prompt_id in every if prompt_id not in made]

    totals: list[int] = []
    chunks: list[list[str]] = []

    def progress(total: int, enabled: bool, desc: str, unit: str = "row") -> None:
        totals.append(total)

    def recording_loop(items: list[PromptItem], *args: object, **kwargs: object) -> object:
        chunks.append([item.id for item in items])
        return run_loop(items, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(generate_module, "progress_bar", progress)
    monkeypatch.setattr(generate_module, "run_loop", recording_loop)
    rest = generate(config(tmp_path, prompts=str(prompts), limit=None, chunk_size=3), progress=True)
    assert (rest.prompts, rest.skipped, rest.generated, rest.rows) == (12, 4, 8, 12)
    assert totals == [8]  # the bar counts what is left, not the whole set
    assert chunks == [left[:3], left[3:6], left[6:]]
    ids = [json.loads(line)["id"] for line in (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(every)
    assert generate(config(tmp_path, prompts=str(prompts), limit=None), progress=False).generated == 0


def test_generate_reads_prompts_a_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.generate as generate_module
    from engine.sources import readers

    prompts = write_prompts(tmp_path / "prompts.jsonl", 20)
    read: list[int] = []
    row_fields = readers.row_fields

    def counting(*args: object, **kwargs: object) -> object:
        read.append(1)
        return row_fields(*args, **kwargs)  # type: ignore[arg-type]

    read_at_each_chunk: list[int] = []

    def recording_loop(items: list[PromptItem], *args: object, **kwargs: object) -> object:
        read_at_each_chunk.append(len(read))
        return run_loop(items, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(readers, "row_fields", counting)
    monkeypatch.setattr(generate_module, "run_loop", recording_loop)
    summary = generate(config(tmp_path, prompts=str(prompts), limit=None, chunk_size=5), progress=False)
    assert summary.generated == 20
    # 20 rows read to check the file, then each chunk's 5 rows only when that chunk is due
    assert [n - 20 for n in read_at_each_chunk] == [5, 10, 15, 20]


def test_a_bad_last_prompt_stops_the_run_before_anything_is_loaded_or_written(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 300)
    with prompts.open("a") as handle:
        handle.write('{"prompt": "fine", "kind": "evil"}\n')
    loaded: list[object] = []

    def backends(*args: object, **kwargs: object) -> ScriptedBackend:
        loaded.append(args)
        return ScriptedBackend()

    with pytest.raises(PromptSetError, match=r"prompts\.jsonl:301: kind: must be one of"):
        generate(config(tmp_path, prompts=str(prompts), limit=None, chunk_size=4), progress=False, backends=backends)
    assert loaded == [] and not (tmp_path / "run").exists()


def test_torn_last_line_is_cut_and_regenerated(tmp_path: Path) -> None:
    generate(config(tmp_path, limit=3), progress=False)
    path = tmp_path / "run" / "trajectories.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # a kill in the middle of row 3
    summary = generate(config(tmp_path, limit=3), progress=False)
    assert summary.generated == 1

    def without_timings(text: str) -> list[dict[str, object]]:
        return [{k: v for k, v in json.loads(x).items() if k != "timings"} for x in text.splitlines()]

    assert path.read_text().splitlines(keepends=True)[:2] == lines[:2]
    assert without_timings(path.read_text()) == without_timings("".join(lines))  # deterministic backend


def test_corrupt_middle_line_is_refused_not_overwritten(tmp_path: Path) -> None:
    generate(config(tmp_path, limit=3), progress=False)
    path = tmp_path / "run" / "trajectories.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{broken\n" + lines[2])
    before = path.read_bytes()
    with pytest.raises(RunDirError, match=r"trajectories.jsonl:2"):
        generate(config(tmp_path, limit=3), progress=False)
    assert path.read_bytes() == before


def test_other_settings_are_refused_unless_forced(tmp_path: Path) -> None:
    generate(config(tmp_path, limit=2), progress=False)
    with pytest.raises(RunDirError, match="constitution"):
        generate(config(tmp_path, limit=2, constitution="helpfulness"), progress=False)
    with pytest.raises(RunDirError, match="policy"):
        generate(config(tmp_path, limit=2, model="hf:other"), progress=False)
    forced = generate(config(tmp_path, limit=3, constitution="helpfulness", force=True), progress=False)
    assert forced.generated == 1 and forced.rows == 3
    hashes = {json.loads(x)["constitution"]["id"] for x in (tmp_path / "run" / "trajectories.jsonl").open()}
    assert hashes == {"default", "helpfulness"}  # each row keeps its own provenance


def test_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        generate(config(tmp_path), progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_model_that_fails_to_load_leaves_no_manifest(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path / "run"), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "run.json").exists()


def test_cli_generate_and_export(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["generate", "--model", "scripted", "--out", str(out), "--limit", "5", "--revisions", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "5 rows" in result.stdout and "preference pairs" in result.stdout
    assert "label quality: 5 of 5 pairs labelled" in result.stdout and "orders disagreed" in result.stdout
    for fmt in ("jsonl", "parquet"):
        exported = CliRunner().invoke(cli, ["export", str(out), "--format", fmt])
        assert exported.exit_code == 0, exported.output
    rows = [json.loads(x) for x in (out / "export" / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["chosen"][0]["role"] == "assistant"
    import pyarrow.parquet as pq

    assert pq.read_table(out / "export" / "sft.parquet").num_rows == 5


def test_cli_label_relabels_a_run_and_reports_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "run"
    made = CliRunner().invoke(cli, ["generate", "--model", "scripted", "--out", str(out), "--limit", "4", "--no-judge"])
    assert made.exit_code == 0, made.output
    assert "label quality" not in made.stdout and not (out / "labels.jsonl").exists()
    result = CliRunner().invoke(cli, ["label", str(out), "--judge-model", "scripted", "--judge-principles", "2"])
    assert result.exit_code == 0, result.output
    assert "4 rows labelled now" in result.stdout and "label quality: 4 of 4 pairs labelled" in result.stdout
    assert len(load_from_disk(str(out / "dataset"))["preferences"]) == 4
    assert "## Label quality" in (out / "README.md").read_text()
    other = CliRunner().invoke(cli, ["label", str(out), "--judge-model", "scripted", "--min-margin", "0.9"])
    assert other.exit_code == 1 and "min_margin" in other.output and "--force" in other.output
    missing = CliRunner().invoke(cli, ["label", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no such folder" in missing.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(cli, ["label", str(tmp_path / "empty")])
    assert empty.exit_code == 1 and "holds no cai run" in empty.output
    band = CliRunner().invoke(cli, ["label", str(out), "--judge-cot", "--judge-band", "0.6", "0.7"])
    assert band.exit_code == 2 and "band" in band.output
    copy = (out / "constitution.yaml").read_text()
    other = CliRunner().invoke(cli, ["label", str(out), "--judge-model", "scripted", "-c", "harmlessness", "--force"])
    assert other.exit_code == 0, other.output
    assert (out / "constitution.yaml").read_text() == copy  # the rules the rows were made under, not the judge's


def test_config_file_with_flag_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"out: {tmp_path / 'run'}\nmodel: scripted\nlimit: 3\nrevisions: 1\nseed: 5\n")
    result = CliRunner().invoke(cli, ["generate", "--config", str(cfg), "--limit", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["seed"] == 5 and manifest["revisions"] == 1
    assert len((tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompts", "{tmp}/empty.jsonl"], "empty.jsonl: empty file"),
        (["--prompts", "{tmp}/bad.jsonl"], "bad.jsonl:2"),
        (["--prompts", "{tmp}/missing.jsonl"], "missing.jsonl"),
        (["--constitution", "{tmp}/empty_rules.yaml"], "empty_rules.yaml"),
        (["--constitution", "no-such-rules"], "no such file"),
        (["--revisions", "-1"], "revisions"),
        (["--config", "{tmp}/typo.yaml"], "did you mean 'revisions'"),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "broken\n')
    (tmp_path / "empty_rules.yaml").write_text(
        "schema_version: 1\nid: e\nname: E\ndescription: d\nversion: '1'\nprinciples: []\n"
    )
    (tmp_path / "typo.yaml").write_text("revisons: 2\n")
    argv = ["generate", "--model", "scripted", "--out", str(tmp_path / "run"), *(a.format(tmp=tmp_path) for a in args)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "trajectories.jsonl").exists()


KILLABLE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.backends.scripted import ScriptedBackend, default_reply
    from engine.config import GenerateConfig
    from engine.generate import generate

    def slow(chat, params):
        time.sleep(0.01)
        return default_reply(chat, params)

    cfg = GenerateConfig(out=Path(sys.argv[1]), model="scripted", prompts=sys.argv[2], chunk_size=2, revisions=2)
    generate(cfg, progress=False, backends=lambda *a, **k: ScriptedBackend(reply=slow))
    """
)


def test_sigkill_mid_run_then_rerun_gives_exactly_one_row_per_prompt(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 60)
    out = tmp_path / "run"
    trajectories = out / "trajectories.jsonl"
    kept = kill_mid_run(KILLABLE, out, prompts, total=60)
    written = len(kept)

    summary = generate(
        GenerateConfig(out=out, model="scripted", prompts=str(prompts), chunk_size=2, revisions=2), progress=False
    )
    lines = trajectories.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == [f"p{i:03d}" for i in range(60)]  # exactly one row per prompt
    assert lines[:written] == kept  # rows written before the kill are untouched
    assert summary.generated == 60 - written


def test_labels_join_trajectories_in_any_order(tmp_path: Path) -> None:
    from engine.judge import LabelStore, LabelTally
    from engine.records import LabelManifest

    generate(config(tmp_path, limit=5), progress=False)
    out = tmp_path / "run"
    store = LabelStore(out, LabelManifest.model_validate_json((out / "labels.json").read_text()))
    lines = (out / "labels.jsonl").read_text().splitlines()
    expected = {json.loads(line)["id"]: json.loads(line)["chosen_from"] for line in lines}
    # Reverse the labels and drop one: every trajectory still meets its own label, or None.
    (out / "labels.jsonl").write_text("\n".join(reversed(lines[1:])) + "\n")
    tally = LabelTally()
    joined = list(store.join(RunDir(out, RunDir.read_manifest(out)).rows(), tally))
    assert [t.id for t, _ in joined] == list(expected)
    for t, label in joined:
        assert (label is None) == (t.id == json.loads(lines[0])["id"])
        assert label is None or label.chosen_from == expected[t.id]
    assert tally.stats().rows == 4
