"""Run folders stay what they look like: one writer at a time, nothing of the user's overwritten,
provenance that matches the rows, labels that match the rows, no setting switched silently."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine.cli import cli
from engine.config import GenerateConfig
from engine.dataset.of_run import rebuild_dataset
from engine.generate import generate, label
from engine.merge import merge
from engine.records import JudgeSettings
from engine.rundir import LOCK, RunDirError, run_lock

ROOT = Path(__file__).resolve().parent.parent

SLOW_GENERATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.backends.scripted import ScriptedBackend, default_reply
    from engine.config import GenerateConfig
    from engine.generate import generate

    def slow(chat, params):
        time.sleep(0.05)
        return default_reply(chat, params)

    cfg = GenerateConfig(out=Path(sys.argv[1]), model="scripted", prompts=sys.argv[2], chunk_size=2, revisions=1)
    generate(cfg, progress=False, backends=lambda *a, **k: ScriptedBackend(reply=slow))
    """
)

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.rundir import run_lock

    with run_lock(Path(sys.argv[1]), "test holder"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"p{i:03d}", "prompt": f"Question {i}: how do I do thing {i}?"}) + "\n")
    return path


def config(tmp_path: Path, **fields: object) -> GenerateConfig:
    base: dict[str, object] = {"out": tmp_path / "run", "model": "scripted", "prompts": "redteam", "limit": 4}
    return GenerateConfig.model_validate(base | fields)


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


class Holder:
    """Another process holding a run folder's lock."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------- 1. one writer at a time


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken_over(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    generate(config(tmp_path, limit=2), progress=False)
    holder = Holder(out)
    try:
        before = (out / "trajectories.jsonl").read_bytes()
        for args in (
            ["generate", "--model", "scripted", "--out", str(out), "--limit", "3"],
            ["label", str(out), "--judge-model", "scripted", "--judge-principles", "2", "--force"],
            ["export", str(out)],
        ):
            result = invoke(args)
            if args[0] == "export":  # nothing to rebuild: export only reads, so it need not wait
                assert result.exit_code == 0, result.output
                continue
            assert result.exit_code == 1, result.output
            assert f"PID {holder.proc.pid}" in result.output and "test holder" in result.output
        with pytest.raises(RunDirError, match=f"PID {holder.proc.pid}"):
            rebuild_dataset(out)
        with pytest.raises(RunDirError, match=f"PID {holder.proc.pid}"):
            label(out, JudgeSettings(principles=2), judge_model="scripted", force=True, progress=False)
        assert (out / "trajectories.jsonl").read_bytes() == before
    finally:
        holder.stop()
    assert "test holder" in (out / LOCK).read_text()  # the dead holder's record is still there...
    summary = generate(config(tmp_path, limit=3), progress=False)  # ...and its lock is taken over
    assert summary.generated == 1
    assert f"PID {os.getpid()}" in (out / LOCK).read_text()


def test_merge_refuses_an_out_folder_another_process_writes(tmp_path: Path) -> None:
    generate(config(tmp_path, out=tmp_path / "a", limit=2), progress=False)
    target = tmp_path / "merged"
    holder = Holder(target)
    try:
        with pytest.raises(RunDirError, match=f"PID {holder.proc.pid}"):
            merge([tmp_path / "a"], target)
    finally:
        holder.stop()
    assert merge([tmp_path / "a"], target).rows == 2


def test_two_concurrent_generates_on_one_folder_the_second_refuses_the_first_finishes_whole(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 120)  # about 20 s of work for the first run
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_GENERATE, str(out), str(prompts)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "trajectories.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    command = ["generate", "--model", "scripted", "--out", str(out), "--prompts", str(prompts), "--chunk-size", "2"]
    second = subprocess.run(
        [sys.executable, "-m", "engine", *command, "--revisions", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _, err = first.communicate(timeout=300)
    assert second.returncode == 1, second.stderr
    assert f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0, err
    assert sorted(ids_in(out / "trajectories.jsonl")) == [f"p{i:03d}" for i in range(120)]
    assert sorted(ids_in(out / "labels.jsonl")) == [f"p{i:03d}" for i in range(120)]


def test_a_folder_made_only_for_the_lock_is_removed_when_the_run_fails_early(tmp_path: Path) -> None:
    out = tmp_path / "new"
    result = invoke(["generate", "--out", str(out), "--model", str(tmp_path / "no-such-model"), "--limit", "1"])
    assert result.exit_code == 1
    assert not out.exists()
    with run_lock(out, "test"):
        assert (out / LOCK).exists()
    assert not out.exists()


# ---------------------------------------------------------------- 2. --force and files cai did not write


@pytest.mark.parametrize("command", ["generate", "merge"])
def test_a_folder_holding_no_run_is_never_written_into_force_or_not(tmp_path: Path, command: str) -> None:
    generate(config(tmp_path, out=tmp_path / "src", limit=2), progress=False)
    out = tmp_path / "mine"
    (out / "dataset").mkdir(parents=True)
    (out / "dataset" / "data.csv").write_text("my own data")
    (out / "README.md").write_text("my notes")
    for force in ([], ["--force"]):
        if command == "generate":
            result = invoke(["generate", "--model", "scripted", "--out", str(out), "--limit", "2", *force])
        else:
            result = invoke(["merge", str(tmp_path / "src"), "--out", str(out), *force])
        assert result.exit_code == 1
        assert "holds no cai run" in result.output
        assert "--force" not in result.output
    assert (out / "dataset" / "data.csv").read_text() == "my own data"
    assert (out / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "dataset"]


def test_merge_force_says_it_replaces_the_run_in_out(tmp_path: Path) -> None:
    generate(config(tmp_path, out=tmp_path / "src", limit=2), progress=False)
    merge([tmp_path / "src"], tmp_path / "merged")
    refused = invoke(["merge", str(tmp_path / "src"), "--out", str(tmp_path / "merged")])
    assert refused.exit_code == 1 and "holds a run already" in refused.output
    forced = invoke(["merge", str(tmp_path / "src"), "--out", str(tmp_path / "merged"), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "replaced the run" in forced.output


# ---------------------------------------------------------------- 3. provenance describes the rows


def test_force_with_another_constitution_keeps_both_and_the_card_counts_rows_per_constitution(tmp_path: Path) -> None:
    out = tmp_path / "run"
    generate(config(tmp_path, limit=2), progress=False)
    old_rules = (out / "constitution.yaml").read_text()
    old_hash = json.loads((out / "run.json").read_text())["constitution"]["hash"]
    result = invoke(
        ["generate", "--model", "scripted", "--out", str(out), "--limit", "5", "-c", "helpfulness", "--force"]
    )
    assert result.exit_code == 0, result.output
    assert "--force:" in result.output and "constitution" in result.output  # says what it replaces
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["constitution"]["id"] == "helpfulness"
    assert [m["constitution"]["hash"] for m in manifest["superseded"]] == [old_hash]
    kept = out / "constitutions" / f"default-{old_hash[:12]}.yaml"
    assert kept.read_text() == old_rules  # the rules that made the first rows are not gone
    assert (out / "constitution.yaml").read_text() != old_rules
    rows = Counter(json.loads(line)["constitution"]["id"] for line in (out / "trajectories.jsonl").open())
    assert rows == {"default": 2, "helpfulness": 3}
    card = (out / "README.md").read_text()
    assert "Rows made under other settings" in card
    assert "| default | " in card and f"`{old_hash[:12]}` | 2 |" in card
    assert f"constitutions/default-{old_hash[:12]}.yaml" in card
    # resuming under the new settings needs no --force and keeps the history
    again = invoke(["generate", "--model", "scripted", "--out", str(out), "--limit", "5", "-c", "helpfulness"])
    assert again.exit_code == 0, again.output
    assert len(json.loads((out / "run.json").read_text())["superseded"]) == 1


def test_a_run_with_superseded_settings_is_not_merged(tmp_path: Path) -> None:
    out = tmp_path / "run"
    generate(config(tmp_path, limit=2), progress=False)
    generate(config(tmp_path, limit=3, constitution="helpfulness", force=True), progress=False)
    result = invoke(["merge", str(out), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 1 and "different settings" in result.output


# ---------------------------------------------------------------- 5. a torn last line is labelled once


def test_a_lost_last_line_is_made_again_and_labelled_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    generate(config(tmp_path, limit=5), progress=False)
    path = out / "trajectories.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:20])  # a crash cut the last row after it was labelled
    summary = generate(config(tmp_path, limit=5), progress=False)
    assert summary.generated == 1
    assert sorted(ids_in(out / "labels.jsonl")) == sorted(ids_in(path))  # one label per row, none twice
    assert summary.labels is not None and summary.labels.rows == 5
    assert "of 5 " in summary.labels.render() and "of 6" not in summary.labels.render()


def test_labels_of_rows_the_run_does_not_hold_do_not_count(tmp_path: Path) -> None:
    out = tmp_path / "run"
    generate(config(tmp_path, limit=4), progress=False)
    labels = (out / "labels.jsonl").read_text().splitlines(keepends=True)
    (out / "labels.jsonl").write_text("".join(labels) + labels[0])  # a row labelled twice (an older version's bug)
    _, _sizes, stats = rebuild_dataset(out)
    assert stats.rows == 4
    assert ids_in(out / "labels.jsonl").count(json.loads(labels[0])["id"]) == 1


# ---------------------------------------------------------------- 6. no setting switches silently


def test_no_judge_on_a_judged_run_needs_force_and_says_what_it_does(tmp_path: Path) -> None:
    out = tmp_path / "run"
    generate(config(tmp_path, limit=3), progress=False)
    labels = (out / "labels.jsonl").read_bytes()
    refused = invoke(["generate", "--model", "scripted", "--out", str(out), "--limit", "3", "--no-judge"])
    assert refused.exit_code == 1
    assert "--no-judge" in refused.output and "--force" in refused.output
    forced = invoke(["generate", "--model", "scripted", "--out", str(out), "--limit", "3", "--no-judge", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "without the judge's labels" in forced.output
    assert (out / "labels.jsonl").read_bytes() == labels


# ---------------------------------------------------------------- 9. an edited prompt


def test_an_edited_prompt_is_refused_on_resume_instead_of_keeping_its_old_row(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    out = tmp_path / "run"
    assert invoke(["generate", "--model", "scripted", "--out", str(out), "-p", str(prompts)]).exit_code == 0
    text = prompts.read_text().replace("Question 1: how do I do thing 1?", "Question 1, reworded")
    prompts.write_text(text)
    result = invoke(["generate", "--model", "scripted", "--out", str(out), "-p", str(prompts)])
    assert result.exit_code == 1
    assert "'p001'" in result.output and "changed" in result.output
    assert ids_in(out / "trajectories.jsonl") == ["p000", "p001", "p002"]


# ---------------------------------------------------------------- 8. one line, not a traceback


@pytest.mark.parametrize(
    ("config_text", "flags", "message"),
    [
        (None, ["--judge-band", "0.9", "0.1"], "--judge-band"),
        ("judge_band: [0.9, 0.1]\n", [], "judge_band"),
        ("max_new_tokens: 1.0e+23\n", [], "max_new_tokens"),
        (None, ["--max-new-tokens", "100000000"], "--max-new-tokens"),
        ("revisions: 1\nrevisions: 2\n", [], "duplicate key 'revisions'"),
        ("max-new-tokens: 8\nmax_new_tokens: 9\n", [], "given twice"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", [], "not a text file"),
        ("- a\n- list\n", [], "mapping of option: value"),
        ("seed: -1\n", [], "seed"),
    ],
)
def test_bad_settings_are_one_line(
    tmp_path: Path, config_text: str | bytes | None, flags: list[str], message: str
) -> None:
    args = ["generate", "--model", "scripted", "--out", str(tmp_path / "run"), "--limit", "1", *flags]
    if config_text is not None:
        path = tmp_path / "run.yaml"
        if isinstance(config_text, bytes):
            path.write_bytes(config_text)
        else:
            path.write_text(config_text)
        args += ["--config", str(path)]
    result = invoke(args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert not (tmp_path / "run").exists()


def test_a_full_disk_mid_run_is_one_message_and_the_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.rundir import JsonlLog

    out = tmp_path / "run"
    real_append = JsonlLog.append
    calls = {"n": 0}

    def append(self: JsonlLog, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_append(self, rows)

    monkeypatch.setattr(JsonlLog, "append", append)
    args = ["generate", "--model", "scripted", "--out", str(out), "--limit", "6", "--chunk-size", "2"]
    result = invoke(args)
    assert result.exit_code == 1
    assert "No space left on device" in result.output and "free some space" in result.output
    monkeypatch.setattr(JsonlLog, "append", real_append)
    assert invoke(args).exit_code == 0
    assert len(ids_in(out / "trajectories.jsonl")) == 6 == len(set(ids_in(out / "trajectories.jsonl")))


def test_an_unwritable_output_folder_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "readonly":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = invoke(["generate", "--model", "scripted", "--out", str(tmp_path / "readonly"), "--limit", "1"])
    assert result.exit_code == 1
    assert "Permission denied" in result.output and "readonly" in result.output
