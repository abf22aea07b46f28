"""Pipelined generation for server backends (engine.pipeline), and the stand-in server's slot-busy measure.

A row takes its next step as soon as its last request is back, with
``--batch-size`` requests in flight: the trajectories must be those of the
step-by-step loop, a run killed mid-way must resume to one row per prompt, and
the path taken is recorded in ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import constitution
from engine.backends.base import Backend, BackendError, Chat, Completion, SamplingParams
from engine.backends.openai_compat import OpenAIBackend
from engine.backends.scripted import ScriptedBackend, default_reply, longer_is_better
from engine.cli import cli
from engine.config import GenerateConfig
from engine.critique import LoopSettings, run_loop
from engine.errors import UserError
from engine.generate import generate
from engine.pipeline import generation_path, run_pipelined
from engine.records import Trajectory
from engine.sources import PromptItem
from tests.interrupt import kill_mid_run
from tests.slot_server import SlotServer, slot_use

ROOT = Path(__file__).resolve().parent.parent


def _digest(chat: Chat) -> int:
    return int(hashlib.sha256(json.dumps(chat).encode()).hexdigest()[:8], 16)


def varied_reply(chat: Chat, params: SamplingParams) -> str:
    """Deterministic replies; a third of the critiques find nothing to change (early stop)."""
    text = chat[-1]["content"]
    if text.startswith("You review") and _digest(chat) % 3 == 0:
        return "The answer is fine. No changes needed."
    if text.startswith("You rewrite") and _digest(chat) % 5 == 0:
        return "Revised response: " + text[-30:]
    return default_reply(chat, params)


class ServedScripted(ScriptedBackend):
    """The scripted backend posing as a server: thread-safe, requests counted, replies taking a few ms.

    ``fail_after``: requests after the first that many raise ``fail`` (a server dying mid-run).
    """

    serves_concurrently = True

    def __init__(self, *, delay: float = 0.004, fail_after: int | None = None, fail: BaseException | None = None):
        super().__init__(reply=varied_reply, scores=longer_is_better)
        self.delay = delay
        self.fail_after = fail_after
        self.fail = fail or BackendError("http://stand-in/v1: connection failed; gave up after 6 tries")
        self.lock = threading.Lock()
        self.requests = self.in_flight = self.peak = 0

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        with self.lock:
            self.requests += 1
            number = self.requests
            self.in_flight += len(chats)
            self.peak = max(self.peak, self.in_flight)
        try:
            if self.fail_after is not None and number > self.fail_after:
                raise self.fail
            if self.delay:  # 0 to 4 times ``delay``: replies come back out of order
                time.sleep(self.delay * (_digest(chats[0]) % 5))
            return super().generate(chats, params)
        finally:
            with self.lock:
                self.in_flight -= len(chats)


def items(n: int) -> list[PromptItem]:
    return [
        PromptItem(id=f"p{i:02d}", messages=[{"role": "user", "content": f"question {i}"}], source="t")
        for i in range(n)
    ]


def write_prompts(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i:03d}", "prompt": f"How do I do thing {i}?"}) + "\n" for i in range(n))
    )
    return path


def comparable(rows: Sequence[Trajectory]) -> dict[str, dict[str, Any]]:
    """Rows by id, without their timings (which differ between any two runs)."""
    return {r.id: r.model_dump(exclude={"timings"}) for r in rows}


def read_rows(out: Path) -> list[Trajectory]:
    return [Trajectory.model_validate_json(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]


def read_labels(out: Path) -> dict[str, dict[str, Any]]:
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len({label["id"] for label in labels}) == len(labels), "a row labelled twice"
    return {label["id"]: label for label in labels}


def run_config(out: Path, prompts: Path, **fields: Any) -> GenerateConfig:
    base: dict[str, Any] = {
        "out": out,
        "model": "scripted",
        "prompts": str(prompts),
        "revisions": 2,
        "batch_size": 4,
        "chunk_size": 8,
        "judge_check": "none",
    }
    return GenerateConfig.model_validate(base | fields)


def served(backend: Backend) -> Any:
    return lambda *_, **__: backend


# ---------------------------------------------------------------- same trajectories


@pytest.mark.parametrize(("revisions", "stop_early"), [(0, True), (1, True), (3, True), (3, False)])
def test_pipelined_rows_are_the_step_by_step_rows(revisions: int, stop_early: bool) -> None:
    rules = constitution.load("default")
    settings = LoopSettings(revisions=revisions, stop_early=stop_early, seed=7)
    batched = run_loop(items(24), rules, ServedScripted(delay=0), ServedScripted(delay=0), settings)
    backend = ServedScripted()
    pipelined = [r for batch in run_pipelined(items(24), rules, backend, backend, settings, in_flight=5) for r in batch]
    assert comparable(pipelined) == comparable(batched)
    assert [r.id for r in pipelined] != [r.id for r in batched] or revisions == 0  # they finish out of order
    assert {r.id: set(r.timings) for r in pipelined} == {r.id: set(r.timings) for r in batched}
    assert all(v > 0 for r in pipelined for v in r.timings.values())  # each step: the row's own request time
    assert set(backend.calls) == {1}  # one chat per request
    if stop_early and revisions:
        assert any(r.rounds[-1].stopped for r in batched) and any(not r.rounds[-1].stopped for r in batched)


def test_generate_pipelined_equals_step_by_step_and_records_the_path(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 20)
    outs = {}
    for choice in ("off", "auto"):
        out = tmp_path / choice
        backend = ServedScripted()
        summary = generate(run_config(out, prompts, pipeline=choice), progress=False, backends=served(backend))
        assert summary.generated == summary.rows == 20
        outs[choice] = out
        manifest = json.loads((out / "run.json").read_text())
        assert manifest["generation"] == ("batched" if choice == "off" else "pipelined")
        assert backend.peak == (4 if choice == "auto" else 8)  # step by step: a whole chunk's step at once
    assert comparable(read_rows(outs["auto"])) == comparable(read_rows(outs["off"]))
    assert read_labels(outs["auto"]) == read_labels(outs["off"])  # labelled the same, chunk by chunk


def test_in_process_backends_stay_batched_and_pipeline_on_refuses_them(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 5)
    backend = ScriptedBackend()
    generate(run_config(tmp_path / "run", prompts, judge=False), progress=False, backends=served(backend))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["generation"] == "batched"
    assert backend.calls == [5] * 5
    result = CliRunner().invoke(
        cli, ["generate", "--model", "scripted", "--out", str(tmp_path / "other"), "--pipeline", "on", "--limit", "2"]
    )
    assert result.exit_code == 2, result.output
    assert "--pipeline on: scripted runs in this process" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "other").exists()


def test_best_of_is_never_pipelined() -> None:
    concurrent = ServedScripted()
    assert generation_path("auto", concurrent, concurrent, 1) == "pipelined"
    assert generation_path("auto", concurrent, concurrent, 2) == "batched"
    assert generation_path("off", concurrent, concurrent, 1) == "batched"
    assert generation_path("auto", concurrent, ScriptedBackend(), 1) == "batched"  # both models must be served
    with pytest.raises(UserError, match="--best-of is not pipelined"):
        generation_path("on", concurrent, concurrent, 4)


def test_resume_may_take_the_other_path(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 12)
    out = tmp_path / "run"
    generate(run_config(out, prompts, limit=5, pipeline="off"), progress=False, backends=served(ServedScripted()))
    summary = generate(run_config(out, prompts), progress=False, backends=served(ServedScripted()))
    assert (summary.skipped, summary.generated) == (5, 7)
    assert json.loads((out / "run.json").read_text())["generation"] == "pipelined"
    generate(run_config(out, prompts), progress=False, backends=served(ServedScripted()))  # nothing left to do
    assert json.loads((out / "run.json").read_text())["generation"] == "pipelined"  # the record stays


# ---------------------------------------------------------------- requests in flight


@pytest.mark.parametrize(("prompts", "batch"), [(30, 4), (3, 8), (10, 1)])
def test_in_flight_reaches_and_never_exceeds_batch_size(prompts: int, batch: int) -> None:
    rules = constitution.load("default")
    backend = ServedScripted(delay=0.003)
    batches = run_pipelined(items(prompts), rules, backend, backend, LoopSettings(revisions=2), in_flight=batch)
    rows = [r for done in batches for r in done]
    assert len(rows) == prompts
    assert backend.peak == min(batch, prompts)


def test_prompts_are_read_only_as_slots_free_up() -> None:
    rules = constitution.load("default")
    taken: list[str] = []

    def stream() -> Any:
        for item in items(50):
            taken.append(item.id)
            yield item

    rows = run_pipelined(stream(), rules, ServedScripted(), ServedScripted(), LoopSettings(revisions=1), in_flight=3)
    first = next(rows)
    assert {r.id for r in first} <= set(taken)
    assert len(taken) == 3 + len(first)  # 3 rows under way, and a new one for each finished row
    rows.close()


# ---------------------------------------------------------------- killed mid-way


@pytest.mark.parametrize("fail", [BackendError("server gone"), KeyboardInterrupt()], ids=["backend-error", "ctrl-c"])
def test_pipelined_run_killed_mid_way_resumes_to_one_row_per_prompt(tmp_path: Path, fail: BaseException) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 24)
    reference = tmp_path / "reference"
    generate(run_config(reference, prompts), progress=False, backends=served(ServedScripted()))

    out = tmp_path / "run"
    dying = ServedScripted(fail_after=45, fail=fail)
    with pytest.raises(type(fail)):
        generate(run_config(out, prompts), progress=False, backends=served(dying))
    written = read_rows(out)  # every line whole
    assert 0 < len(written) < 24, "the failure should land mid-run"
    assert dying.requests <= 45 + 4  # nothing sent after the failure but what was already in flight

    summary = generate(run_config(out, prompts), progress=False, backends=served(ServedScripted()))
    rows = read_rows(out)
    assert sorted(r.id for r in rows) == [f"p{i:03d}" for i in range(24)]  # exactly one row per prompt
    assert summary.generated == 24 - len(written)
    assert comparable(rows) == comparable(read_rows(reference))
    assert read_labels(out) == read_labels(reference)  # rows written but not labelled before the kill are labelled


KILLABLE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.backends.scripted import ScriptedBackend
    from engine.config import GenerateConfig
    from engine.generate import generate

    class Served(ScriptedBackend):
        serves_concurrently = True

        def generate(self, chats, params):
            time.sleep(0.01)
            return super().generate(chats, params)

    cfg = GenerateConfig(out=Path(sys.argv[1]), model="scripted", prompts=sys.argv[2], revisions=2, batch_size=4,
                         judge_check="none")
    generate(cfg, progress=False, backends=lambda *a, **k: Served())
    """
)


def test_sigkill_mid_pipelined_run_then_rerun_gives_exactly_one_row_per_prompt(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 60)
    out = tmp_path / "run"
    trajectories = out / "trajectories.jsonl"
    kept = kill_mid_run(KILLABLE, out, prompts, total=60)
    written = len(kept)
    assert json.loads((out / "run.json").read_text())["generation"] == "pipelined"

    class Served(ScriptedBackend):
        serves_concurrently = True

    summary = generate(
        GenerateConfig(out=out, model="scripted", prompts=str(prompts), revisions=2, batch_size=4, judge_check="none"),
        progress=False,
        backends=served(Served()),
    )
    lines = trajectories.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [f"p{i:03d}" for i in range(60)]
    assert lines[:written] == kept  # rows written before the kill are untouched
    assert summary.generated == 60 - written
    assert sorted(read_labels(out)) == [f"p{i:03d}" for i in range(60)]


# ---------------------------------------------------------------- bad input


def test_bad_batch_size_message_is_unchanged(tmp_path: Path) -> None:
    for model in ("scripted", "openai:m@http://127.0.0.1:9/v1"):
        result = CliRunner().invoke(
            cli, ["generate", "--model", model, "--out", str(tmp_path / "r"), "--batch-size", "0"]
        )
        assert result.exit_code == 1, result.output  # as before pipelining: the run config refuses it
        assert result.output.strip() == "error: --batch-size: Input should be greater than or equal to 1"
        assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path / "r"), "--pipeline", "sometimes"])
    assert result.exit_code == 2 and "'sometimes' is not one of 'auto', 'on', 'off'" in result.output


# ---------------------------------------------------------------- the stand-in server


def test_slot_use_of_known_intervals() -> None:
    use = slot_use([(0.0, 1.0), (0.0, 1.0), (1.0, 2.0)], slots=2)  # 3 slot-seconds of 2 slots x 2 s
    assert (use.requests, use.service_s, use.wall_s, use.peak) == (3, 3.0, 2.0, 2)
    assert use.busy == pytest.approx(0.75)
    back_to_back = slot_use([(0.0, 1.0), (1.0, 3.0)], slots=1)
    assert back_to_back.busy == pytest.approx(1.0) and back_to_back.peak == 1
    assert slot_use([(0.0, 1.0), (2.0, 3.0)], slots=4).busy == pytest.approx(2 / 12)
    assert slot_use([], slots=3).busy == 0.0
    with pytest.raises(ValueError, match="slots must be at least 1"):
        slot_use([(0.0, 1.0)], slots=0)


def test_stand_in_server_measures_its_slots_under_a_scripted_load() -> None:
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    params = SamplingParams(max_new_tokens=8)
    with SlotServer(2, median=0.15, sigma=0.0) as server:  # every request holds its slot 0.15 s
        full = OpenAIBackend(server.model, base_url=server.url, max_concurrency=6)
        full.generate(chats, params)  # 6 requests at once queue for 2 slots: never idle
        use = server.use()
        assert (use.requests, use.peak) == (6, 2)
        assert use.service_s == pytest.approx(0.9, abs=0.05)
        assert use.busy > 0.9
        server.reset()
        one = OpenAIBackend(server.model, base_url=server.url, max_concurrency=1)
        one.generate(chats[:3], params)  # one at a time: one slot of two idle
        use = server.use()
        assert (use.requests, use.peak) == (3, 1)
        assert 0.4 < use.busy <= 0.5
        full.close()
        one.close()


def test_stand_in_service_times_are_long_tailed_and_seeded() -> None:
    server = SlotServer(4, median=0.05, sigma=1.0, cap=2.0)
    times = sorted(
        server.service_time({"messages": [{"role": "user", "content": f"q{i}"}], "seed": 0}) for i in range(400)
    )
    assert times[200] == pytest.approx(0.05, rel=0.25)  # the median
    assert times[396] > 8 * times[200]  # the tail
    again = server.service_time({"messages": [{"role": "user", "content": "q3"}], "seed": 0})
    assert again == server.service_time({"messages": [{"role": "user", "content": "q3"}], "seed": 0})
    server.httpd.server_close()


def test_pipelined_through_the_stand_in_server(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 12)
    with SlotServer(3, median=0.01, sigma=1.0, cap=0.1) as server:
        spec = f"openai:{server.model}@{server.url}"
        for choice in ("off", "auto"):
            server.reset()
            generate(
                run_config(tmp_path / choice, prompts, model=spec, batch_size=3, judge=False, pipeline=choice),
                progress=False,
            )
            assert server.max_in_flight == 3
            assert server.use().peak == 3
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["generation"] == "pipelined"
    assert comparable(read_rows(tmp_path / "auto")) == comparable(read_rows(tmp_path / "off"))
