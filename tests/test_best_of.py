"""Best-of-n first answers (``cai generate --best-of N --reward-model rm:PATH``).

The loop is tested with a scripted policy and a fake preference model whose
rewards the test controls; one end-to-end run goes through the command line
with the tiny random preference model of :mod:`tests.models`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

import constitution
from engine.backends.base import BackendError, Chat, SamplingParams
from engine.backends.scripted import ScriptedBackend, default_reply
from engine.cli import cli
from engine.config import GenerateConfig
from engine.critique import LoopSettings, run_loop, sample_seed
from engine.generate import generate
from engine.records import BestOf, Sample, Trajectory
from engine.rundir import RunDirError
from engine.sources import PromptItem

RULES = constitution.load("default")


def items(n: int) -> list[PromptItem]:
    return [
        PromptItem(id=f"p{i}", messages=[{"role": "user", "content": f"question {i}"}], source="test") for i in range(n)
    ]


def hashed_reward(text: str) -> float:
    """A reward the test can recompute: a fixed pseudo-random number per text."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) / 1000


class FakeScorer:
    """A preference model whose rewards come from a function of the text; it records every call."""

    def __init__(
        self,
        name: str = "rm:fake",
        reward: Callable[[str], float] = hashed_reward,
        fail_on_call: int | None = None,
    ) -> None:
        self.name = name
        self.reward = reward
        self.fail_on_call = fail_on_call
        self.calls: list[list[tuple[Chat, str]]] = []

    def score(self, items: Sequence[tuple[Chat, str]]) -> list[float]:
        self.calls.append(list(items))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        return [self.reward(text) for _, text in items]


class RecordingPolicy(ScriptedBackend):
    """The scripted backend (replies depend on the chat and the seed), keeping every chat and seed it was sent."""

    def __init__(self) -> None:
        super().__init__(reply=self._reply)
        self.sent: list[tuple[str, int]] = []

    def _reply(self, chat: Chat, params: SamplingParams) -> str:
        self.sent.append((chat[-1]["content"], params.seed))
        return default_reply(chat, params)


def loop(
    n: int, rows: int = 6, *, revisions: int = 1, scorer: FakeScorer | None = None, seed: int = 0
) -> tuple[list[Trajectory], RecordingPolicy, FakeScorer]:
    policy = RecordingPolicy()
    scorer = scorer or FakeScorer()
    settings = LoopSettings(revisions=revisions, seed=seed, best_of=n, stop_early=False)
    return run_loop(items(rows), RULES, policy, policy, settings, scorer), policy, scorer


# ------------------------------------------------------------------ the loop


def test_the_kept_answer_is_the_argmax_of_the_rewards_and_every_sample_is_recorded() -> None:
    rows, _, scorer = loop(4)
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 6 * 4  # every sample scored in one call
    kept = set()
    for row in rows:
        best = row.best_of
        assert best is not None and best.n == 4 and best.reward_model == "rm:fake" and len(best.samples) == 4
        rewards = [s.reward for s in best.samples]
        assert rewards == [hashed_reward(s.text) for s in best.samples]
        assert best.kept == rewards.index(max(rewards))
        assert row.initial == best.samples[best.kept].text
        assert [s.seed for s in best.samples] == [sample_seed(0, k) for k in range(4)]
        assert {"initial", "best_of"} <= set(row.timings)
        kept.add(best.kept)
    assert len(kept) > 1, "the rewards should not always favour the same sample index"


def test_equal_rewards_keep_the_first_sample() -> None:
    rows, _, _ = loop(3, scorer=FakeScorer(reward=lambda text: 1.0))
    assert all(row.best_of is not None and row.best_of.kept == 0 for row in rows)
    assert all(row.initial == row.best_of.samples[0].text for row in rows if row.best_of)


def test_samples_are_distinct_reproducible_and_sample_0_is_the_plain_first_answer() -> None:
    rows, policy, _ = loop(4, revisions=0)
    assert policy.calls == [6, 6, 6, 6]  # one batched call per sample index
    for row in rows:
        assert row.best_of is not None
        texts = [s.text for s in row.best_of.samples]
        assert len(set(texts)) == 4
    again, _, _ = loop(4, revisions=0)
    assert [r.best_of for r in again] == [r.best_of for r in rows]
    plain = run_loop(items(6), RULES, ScriptedBackend(), ScriptedBackend(), LoopSettings(revisions=0))
    assert [p.initial for p in plain] == [r.best_of.samples[0].text for r in rows if r.best_of]
    assert all(p.best_of is None for p in plain)
    other_seed, _, _ = loop(4, revisions=0, seed=1)
    ours = {s.seed for r in rows if r.best_of for s in r.best_of.samples}
    theirs = {s.seed for r in other_seed if r.best_of for s in r.best_of.samples}
    assert not ours & theirs  # runs with neighbouring seeds share no sample (seed + k would share three)


def test_the_revision_rounds_start_from_the_kept_answer() -> None:
    rows, policy, _ = loop(4, rows=5, revisions=1)
    critiques = [text for text, _ in policy.sent if text.startswith("You review")]
    revisions = [text for text, _ in policy.sent if text.startswith("You rewrite")]
    assert len(critiques) == len(revisions) == 5
    for row in rows:
        assert row.best_of is not None
        question = row.prompt[-1]["content"]
        critique = next(c for c in critiques if question in c)
        revision = next(r for r in revisions if question in r)
        assert row.initial in critique and row.initial in revision
        for k, sample in enumerate(row.best_of.samples):
            if k != row.best_of.kept:
                assert sample.text not in critique and sample.text not in revision


def test_a_reward_that_is_not_a_number_is_one_message() -> None:
    scorer = FakeScorer(reward=lambda text: float("nan"))
    with pytest.raises(BackendError, match=r"rm:fake: gave a reward of nan .*--dtype float32"):
        loop(2, scorer=scorer)


def test_best_of_without_a_scorer_is_a_programming_error() -> None:
    backend = ScriptedBackend()
    with pytest.raises(ValueError, match="reward model"):
        run_loop(items(1), RULES, backend, backend, LoopSettings(best_of=2))


# ------------------------------------------------------------------ the record


def test_old_trajectories_without_best_of_load_and_a_kept_sample_must_be_the_first_answer() -> None:
    (row,) = run_loop(items(1), RULES, ScriptedBackend(), ScriptedBackend(), LoopSettings(revisions=1))
    old = json.loads(row.model_dump_json())
    del old["best_of"]  # as written before the field existed
    assert Trajectory.model_validate(old).best_of is None
    samples = [Sample(text=row.initial, seed=0, reward=1.0), Sample(text="other", seed=7, reward=0.0)]
    with_best = {**old, "best_of": BestOf(n=2, reward_model="rm:x", samples=samples, kept=0).model_dump()}
    assert Trajectory.model_validate(with_best).best_of is not None
    with pytest.raises(ValueError, match="sample kept"):
        Trajectory.model_validate({**with_best, "best_of": {**with_best["best_of"], "kept": 1}})
    with pytest.raises(ValueError, match="only 2 samples"):
        BestOf(n=2, reward_model="rm:x", samples=samples, kept=2)


# ------------------------------------------------------------------ runs


def config(tmp_path: Path, **fields: object) -> GenerateConfig:
    base: dict[str, object] = {
        "out": tmp_path / "run",
        "model": "scripted",
        "prompts": "redteam",
        "limit": 6,
        "chunk_size": 2,
        "revisions": 1,
        "judge": False,
        "best_of": 3,
        "reward_model": "rm:fake",
    }
    return GenerateConfig.model_validate(base | fields)


class Rewards:
    """A reward-model factory that records what it was asked to load."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.loads: list[tuple[str, dict[str, object]]] = []
        self.fail_on_call = fail_on_call
        self.scorer: FakeScorer | None = None

    def __call__(self, spec: str, **options: object) -> FakeScorer:
        self.loads.append((spec, options))
        self.scorer = FakeScorer(name=spec, fail_on_call=self.fail_on_call)
        return self.scorer


def lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()


def test_an_interrupted_best_of_run_resumes_without_redoing_finished_rows(tmp_path: Path) -> None:
    interrupted = Rewards(fail_on_call=2)  # the second chunk's scoring is interrupted
    with pytest.raises(KeyboardInterrupt):
        generate(config(tmp_path), progress=False, rewards=interrupted)
    before = lines(tmp_path)
    assert len(before) == 2
    finished = {json.loads(line)["id"] for line in before}

    policies: list[RecordingPolicy] = []

    def backends(spec: str, **_: object) -> RecordingPolicy:
        policies.append(RecordingPolicy())
        return policies[-1]

    rewards = Rewards()
    summary = generate(config(tmp_path, batch_size=5, device="cpu"), progress=False, backends=backends, rewards=rewards)
    assert (summary.skipped, summary.generated, summary.rows) == (2, 4, 6)
    assert rewards.loads == [("rm:fake", {"batch_size": 5, "dtype": "auto", "device": "cpu"})]  # once per run
    assert rewards.scorer is not None and sum(len(call) for call in rewards.scorer.calls) == 4 * 3
    after = lines(tmp_path)
    assert after[:2] == before  # the finished rows are kept as they were
    rows = [Trajectory.model_validate_json(line) for line in after]
    assert len({r.id for r in rows}) == 6 and all(r.best_of is not None and r.best_of.n == 3 for r in rows)
    answered = {text for p in policies for text, _ in p.sent}
    assert not any(row.prompt[-1]["content"] in answered for row in rows if row.id in finished)

    idle = Rewards()
    assert generate(config(tmp_path), progress=False, rewards=idle).generated == 0
    assert idle.loads == []  # nothing left to generate: no preference model is loaded


def test_the_manifest_records_best_of_and_a_resume_with_others_is_refused_unless_forced(tmp_path: Path) -> None:
    generate(config(tmp_path, limit=2), progress=False, rewards=Rewards())
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (manifest["best_of"], manifest["reward_model"]) == (3, "rm:fake")
    with pytest.raises(RunDirError, match=r"best_of: 3 \(in the folder\) vs 2 \(now\)"):
        generate(config(tmp_path, limit=2, best_of=2), progress=False, rewards=Rewards())
    with pytest.raises(RunDirError, match="reward_model: rm:fake"):
        generate(config(tmp_path, limit=2, reward_model="rm:other"), progress=False, rewards=Rewards())
    with pytest.raises(RunDirError, match="best_of"):
        generate(config(tmp_path, limit=2, best_of=1, reward_model=None), progress=False)
    forced = generate(config(tmp_path, limit=3, best_of=2, force=True), progress=False, rewards=Rewards())
    assert forced.generated == 1
    assert [len(json.loads(line)["best_of"]["samples"]) for line in lines(tmp_path)] == [3, 3, 2]


def test_a_folder_written_before_best_of_existed_resumes(tmp_path: Path) -> None:
    plain = config(tmp_path, best_of=1, reward_model=None)
    generate(plain, progress=False)
    rows = [json.loads(line) for line in lines(tmp_path)]
    for row in rows:
        del row["best_of"]
    (tmp_path / "run" / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    del manifest["best_of"], manifest["reward_model"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(manifest))
    again = generate(config(tmp_path, best_of=1, reward_model=None, limit=7), progress=False)
    assert (again.skipped, again.generated, again.rows) == (6, 1, 7)


# ------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.backends.default_model import default_model_path
    from tests.models import build_tiny_reward_model

    return build_tiny_reward_model(default_model_path(), tmp_path_factory.mktemp("rm") / "rm")


def test_cli_best_of_with_the_tiny_preference_model(tmp_path: Path, tiny_rm: Path) -> None:
    from engine.backends.reward_model import load_reward_model

    out = tmp_path / "run"
    spec = f"rm:{tiny_rm}"
    argv = ["generate", "--model", "scripted", "--out", str(out), "--limit", "3", "--revisions", "1"]
    argv += ["--best-of", "3", "--reward-model", spec, "--device", "cpu", "--dtype", "float32"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    rows = [Trajectory.model_validate_json(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    scorer = load_reward_model(spec, device="cpu", dtype="float32")
    for row in rows:
        best = row.best_of
        assert best is not None and best.n == 3 and best.reward_model == spec
        assert len({s.text for s in best.samples}) == 3
        again = scorer.score([(row.prompt, s.text) for s in best.samples])
        assert [s.reward for s in best.samples] == pytest.approx(again, abs=1e-4)
        assert best.kept == again.index(max(again)) and row.initial == best.samples[best.kept].text
    manifest = json.loads((out / "run.json").read_text())
    assert (manifest["best_of"], manifest["reward_model"]) == (3, spec)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--best-of", "2"], 2, "--best-of 2 needs a preference model to pick the best sample: add --reward-model"),
        (
            ["--best-of", "2", "--reward-model", "models/rm"],
            1,
            "models/rm is not a preference model; name one as rm:PATH",
        ),
        (["--best-of", "2", "--reward-model", "rm:"], 1, "rm: needs a path"),
        (["--best-of", "2", "--reward-model", "rm:{tmp}/nope"], 1, "nope: no such model folder"),
        (["--best-of", "2", "--reward-model", "rm:x", "--temperature", "0"], 2, "set --temperature above 0"),
        (["--best-of", "0", "--reward-model", "rm:x"], 1, "--best-of: Input should be greater than or equal to 1"),
        (["--best-of", "65", "--reward-model", "rm:x"], 1, "--best-of: Input should be less than or equal to 64"),
        (["--reward-model", "rm:x"], 2, "--best-of is 1; add --best-of N"),
        (["--config", "{tmp}/run.yaml"], 2, "--best-of 4 needs a preference model"),
    ],
)
def test_bad_best_of_settings_are_one_message(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "run.yaml").write_text("best_of: 4\n")
    argv = ["generate", "--model", "scripted", "--out", str(tmp_path / "run"), "--limit", "2"]
    result = CliRunner().invoke(cli, argv + [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run" / "run.json").exists()
