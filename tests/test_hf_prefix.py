"""Prefix reuse in the transformers backend: shared batches, and outputs equal to running every prompt whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backends.base import Chat, SamplingParams, ScoreRequest
from engine.backends.prefix import (
    CACHE_FACTOR,
    FREE_PADDING,
    MAX_PADDING,
    MIN_SHARED,
    NO_TOKENS,
    TokenMeter,
    common_prefix,
    count,
    length_batches,
    longest_known,
    plan_batches,
    shared_heads,
    waves,
)
from engine.records import PromptTokenCount
from tests.models import tiny_model_dir

HEAD = "Judge the answers below by this principle: be kind, be honest, and do not help anyone hurt people. "
CHATS: list[Chat] = [
    *([{"role": "user", "content": HEAD + f"Conversation {i}: " + "tell me more " * (i % 4)}] for i in range(9)),
    [{"role": "user", "content": HEAD}],  # the others' prefix as a whole prompt
    [{"role": "user", "content": HEAD}],  # a duplicate
    [{"role": "user", "content": "A short one that shares nothing."}],
]
OPTIONS = ["(A)", "(B)", " neither of them, really"]  # one-token and many-token options


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def backends(tiny_dir: Path):  # type: ignore[no-untyped-def]
    from engine.backends.hf import HFBackend

    on = HFBackend(str(tiny_dir), dtype="float32", device="cpu", batch_size=4)
    off = HFBackend(str(tiny_dir), dtype="float32", device="cpu", batch_size=4, prefix_reuse=False)
    return on, off


# ------------------------------------------------------------------ batching


@settings(max_examples=300, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), max_size=30),
    batch_size=st.integers(1, 6),
    max_tokens=st.integers(1, 60),
)
def test_plans_cover_every_prompt_once_within_the_limits(
    prompts: list[list[int]], batch_size: int, max_tokens: int
) -> None:
    lengths = [len(p) for p in prompts]
    heads = [min(len(p) - 1, h) for p, h in zip(prompts, shared_heads([[9] * 8 + p for p in prompts]), strict=True)]
    seen: list[int] = []
    for plan in plan_batches(lengths, heads, batch_size, max_tokens):
        seen.extend(plan.rows)
        assert 1 <= len(plan.rows) <= batch_size
        assert plan.heads == [heads[i] for i in plan.rows]
        if len(plan.rows) > 1:
            own = [lengths[i] - heads[i] for i in plan.rows]
            assert len(plan.rows) * max(own) <= max_tokens
            assert len(plan.rows) * max(own) - sum(own) <= max(MAX_PADDING * sum(own), FREE_PADDING)
            assert len(plan.rows) * max(lengths[i] for i in plan.rows) <= CACHE_FACTOR * max_tokens
    assert sorted(seen) == list(range(len(prompts)))
    decoding = [p.rows for p in plan_batches(lengths, heads, batch_size, max_tokens, decoding=True)]
    assert decoding == list(length_batches(lengths, batch_size, max_tokens))
    nothing_shared = [0] * len(prompts)
    assert [p.rows for p in plan_batches(lengths, nothing_shared, batch_size, max_tokens, decoding=True)] == list(
        length_batches(lengths, batch_size, max_tokens)
    )
    for plan in plan_batches(
        lengths, nothing_shared, batch_size, max_tokens
    ):  # scoring: whole prompts, padding bounded
        whole = [lengths[i] for i in plan.rows]
        assert len(whole) * max(whole) - sum(whole) <= max(MAX_PADDING * sum(whole), FREE_PADDING)


@settings(max_examples=300, deadline=None)
@given(prompts=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=14), max_size=20))
def test_a_head_is_the_longest_prefix_shared_with_another_prompt(prompts: list[list[int]]) -> None:
    for i, (prompt, head) in enumerate(zip(prompts, shared_heads(prompts), strict=True)):
        others = [common_prefix(prompt, q) for j, q in enumerate(prompts) if j != i]
        longest = min(max(others, default=0), len(prompt) - 1)
        assert head == (longest if longest >= MIN_SHARED else 0)


@settings(max_examples=200, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=14), max_size=20),
    budget=st.integers(1, 40),
)
def test_waves_hold_every_prompt_once_and_their_heads_within_the_budget(prompts: list[list[int]], budget: int) -> None:
    heads = shared_heads(prompts)
    found = waves(prompts, heads, budget)
    assert sorted(i for wave in found for i in wave) == list(range(len(prompts)))
    for wave in found:
        distinct = {tuple(prompts[i][: heads[i]]) for i in wave if heads[i]}
        assert len(distinct) <= 1 or sum(map(len, distinct)) <= budget


def test_nested_heads_and_what_a_batch_counts() -> None:
    system = list(range(200, 210))
    one, two = system + list(range(100, 160)), system + list(range(300, 350))
    prompts = [[*one, 1, 2], [*two, 5], [*one, 3], [*two, 6, 7], [*one, 4], [*system, 8, 9]]
    assert shared_heads(prompts) == [len(one), len(two), len(one), len(two), len(one), len(system)]
    assert shared_heads([one, two]) == [len(system), len(system)]  # the heads' own head: the system prompt
    (plan,) = plan_batches([len(p) for p in prompts], shared_heads(prompts), batch_size=8, max_tokens=4096)
    assert plan.rows == [1, 2, 4, 0, 3, 5]  # by own length
    counted = count(plan, [len(prompts[i]) for i in plan.rows])
    assert counted.requested == sum(map(len, prompts))
    assert counted.computed == 1 + 1 + 1 + 2 + 2 + 2
    # Nothing long in common: no heads.
    assert shared_heads([[1] * 9, [1] * 3 + [2] * 6, [3] * 6]) == [0, 0, 0]
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2


@settings(max_examples=300, deadline=None)
@given(
    known=st.sets(st.lists(st.integers(0, 2), min_size=1, max_size=8).map(tuple), max_size=12),
    prompt=st.lists(st.integers(0, 2), max_size=12),
)
def test_the_longest_known_head_is_the_longest_key_the_prompt_starts_with(
    known: set[tuple[int, ...]], prompt: list[int]
) -> None:
    want = max((len(k) for k in known if len(k) < len(prompt) and tuple(prompt[: len(k)]) == k), default=0)
    assert longest_known(sorted(known), prompt) == want


def test_the_head_cache_drops_the_least_recently_used_past_its_budget() -> None:
    import torch

    from engine.backends.kv_cache import HeadCache

    def kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]

    cache = HeadCache(max_tokens=10)
    a, b, c = (1, 2, 3, 4), (1, 2, 3, 5), (7, 7, 7, 7)
    cache.put(a, kv(4))
    cache.put(b, kv(4))
    assert cache.longest([1, 2, 3, 4, 9]) == 4 and cache.longest([1, 2, 3, 4]) == 0  # short of the last token
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, kv(4))  # 12 tokens > 10: b goes
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert cache.tokens == 8 and len(cache) == 2 and cache.longest([1, 2, 3, 5, 0]) == 0
    cache.put(tuple(range(11)), kv(11))  # longer than the whole budget: not kept, nothing dropped
    assert len(cache) == 2 and cache.tokens == 8
    cache.clear()
    assert len(cache) == 0 and cache.tokens == 0 and cache.longest([1, 2, 3, 4, 9]) == 0


# ------------------------------------------------------------------ the backend


def test_scores_with_a_shared_prefix_equal_every_prompt_run_whole(backends) -> None:  # type: ignore[no-untyped-def]
    on, off = backends
    requests = [ScoreRequest(chat, OPTIONS) for chat in CHATS]
    on.prompt_tokens = off.prompt_tokens = NO_TOKENS
    shared, whole = on.score(requests), off.score(requests)
    for got, want in zip(shared, whole, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert on.prompt_tokens.requested == off.prompt_tokens.requested == off.prompt_tokens.computed
    assert on.prompt_tokens.computed < 0.5 * on.prompt_tokens.requested  # the head ran once for the call
    assert on.describe()["prefix_reuse"] is True and off.describe()["prefix_reuse"] is False


def test_a_batch_cut_for_its_logits_still_scores_the_same(backends, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import engine.backends.hf as hf

    on, off = backends
    requests = [ScoreRequest(chat, OPTIONS) for chat in CHATS]
    want = off.score(requests)
    monkeypatch.setattr(hf, "_LOGITS_BUDGET", 1)  # one row per forward pass: nothing left to share
    for got, expected in zip(on.score(requests), want, strict=True):
        assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("stop", [(), ("e",)])
def test_greedy_generations_with_a_shared_prefix_equal_every_prompt_run_whole(backends, stop: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    on, off = backends
    params = SamplingParams(temperature=0, max_new_tokens=12, stop=stop)
    on.prompt_tokens = NO_TOKENS
    assert on.generate(CHATS, params) == off.generate(CHATS, params)
    assert on.prompt_tokens.computed < on.prompt_tokens.requested


def test_heads_held_a_few_at_a_time_give_the_same_outputs(backends, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    on, off = backends
    chats = [
        *CHATS,
        *([{"role": "user", "content": f"Another principle {i % 2}, at length. " * 6 + str(i)}] for i in range(4)),
    ]
    params = SamplingParams(temperature=0, max_new_tokens=6)
    requests = [ScoreRequest(chat, OPTIONS) for chat in chats]
    want_text, want_scores = off.generate(chats, params), off.score(requests)
    monkeypatch.setattr(on, "max_head_tokens", 1)  # every head in a wave of its own
    monkeypatch.setattr(on.heads, "max_tokens", 1)  # and none kept for the next call
    on.heads.clear()
    on.prompt_tokens = NO_TOKENS
    assert on.generate(chats, params) == want_text
    for got, expected in zip(on.score(requests), want_scores, strict=True):
        assert got == pytest.approx(expected, abs=1e-4)
    assert on.prompt_tokens.computed < 0.8 * on.prompt_tokens.requested


def test_a_decoding_batch_with_heads_of_different_lengths_runs_each_length_apart(
    backends, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Rows of one generation batch under two principles (and one under none) give what they give run whole,
    and the prompt passes run one head length at a time, not every row's own tokens after the longest head."""
    on, off = backends
    other = "Be brief. "
    chats: list[Chat] = [
        *([{"role": "user", "content": HEAD + f"Conversation {i}: " + "more " * i}] for i in range(3)),
        *([{"role": "user", "content": other * 3 + f"Talk {i}: " + "again " * (2 * i + 6)}] for i in range(3)),
        [{"role": "user", "content": "Nothing in common with the rest, said at some length."}],
    ]
    params = SamplingParams(temperature=0, max_new_tokens=6)
    want = off.generate(chats, params)
    monkeypatch.setattr(on, "batch_size", len(chats))  # one decoding batch for every row
    on.heads.clear()
    seen: list[set[int]] = []  # the head lengths of each prompt pass before decoding
    with_heads, prompt_cache = on._with_heads, on._prompt_cache
    passes: list[list[set[int]]] = []

    def spy(prompts, plan, store):  # type: ignore[no-untyped-def]
        if passes:
            passes[-1].append(set(plan.heads))
        return with_heads(prompts, plan, store)

    def cache_spy(prompts, plan, store, room):  # type: ignore[no-untyped-def]
        passes.append([])
        try:
            return prompt_cache(prompts, plan, store, room)
        finally:
            seen.extend(passes.pop())

    monkeypatch.setattr(on, "_with_heads", spy)
    monkeypatch.setattr(on, "_prompt_cache", cache_spy)
    assert on.generate(chats, params) == want
    assert len(seen) > 1 and all(len(heads) == 1 for heads in seen)


def test_heads_kept_from_an_earlier_call_give_the_same_outputs_and_are_not_computed_again(backends) -> None:  # type: ignore[no-untyped-def]
    on, off = backends
    params = SamplingParams(temperature=0, max_new_tokens=6)
    requests = [ScoreRequest(chat, OPTIONS) for chat in CHATS]
    want_text, want_scores = off.generate(CHATS, params), off.score(requests)
    on.heads.clear()
    counts = []
    for _ in range(2):
        on.prompt_tokens = NO_TOKENS
        assert on.generate(CHATS, params) == want_text
        counts.append(on.prompt_tokens)
    assert counts[0].requested == counts[1].requested and counts[1].computed < counts[0].computed
    assert len(on.heads) > 0
    # A call of one prompt shares with no other prompt of its call, yet continues from a kept head.
    on.prompt_tokens = NO_TOKENS
    (alone,) = on.score(requests[:1])
    assert alone == pytest.approx(want_scores[0], abs=1e-4)
    assert on.prompt_tokens.computed < on.prompt_tokens.requested - MIN_SHARED
    for got, expected in zip(on.score(requests), want_scores, strict=True):  # scoring after generating
        assert got == pytest.approx(expected, abs=1e-4)


def test_sampled_generations_with_a_shared_prefix_are_reproducible(backends) -> None:  # type: ignore[no-untyped-def]
    on, _ = backends
    params = SamplingParams(temperature=0.9, max_new_tokens=8, seed=5)
    assert on.generate(CHATS, params) == on.generate(CHATS, params)


def test_an_explanation_is_the_same_with_and_without_reuse(backends) -> None:  # type: ignore[no-untyped-def]
    import constitution
    from engine.explain import explain
    from engine.judge.pairwise import Judge, Pair

    rules = constitution.load("default")
    pair = Pair(
        [{"role": "user", "content": "How do I calm a barking dog?"}],
        "Walk it in the evening. Give it a toy. Ask a trainer.",
        "Shout at it. Dogs learn from noise.",
        (rules.principles[0],),
    )
    found = [explain(Judge(backend, constitution=rules), pair, top=2).to_dict() for backend in backends]
    shared, whole = ([s["push"] for s in result["sentences"]] for result in found)
    assert shared == pytest.approx(whole, abs=1e-4)


def test_a_run_records_its_prompt_tokens_and_a_resume_adds_to_them(tiny_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.cli import cli
    from engine.rundir import RunDir

    out = tmp_path / "run"
    args = ["generate", "--out", str(out), "--model", str(tiny_dir), "--prompts", "mixed", "--revisions", "1"]
    args += ["--max-new-tokens", "4", "--batch-size", "4", "--temperature", "0", "--judge-check", "none"]
    first = CliRunner().invoke(cli, [*args, "--limit", "4"])
    assert first.exit_code == 0, first.output
    counted = RunDir.read_manifest(out).prompt_tokens
    assert counted is not None and 0 < counted.computed < counted.requested
    assert counted.render() in first.output  # the summary line
    again = CliRunner().invoke(cli, [*args, "--limit", "6"])
    assert again.exit_code == 0, again.output
    more = RunDir.read_manifest(out).prompt_tokens
    assert more is not None and more.requested > counted.requested and more.computed > counted.computed


def test_the_meter_counts_each_backend_once_from_when_it_was_watched(backends) -> None:  # type: ignore[no-untyped-def]
    on, _ = backends
    meter = TokenMeter()
    assert meter.used() is None and meter.watch("no counter") == "no counter" and meter.used() is None
    on.prompt_tokens = PromptTokenCount(requested=5, computed=3)
    meter.watch(on)
    meter.watch(on)  # the same model as policy, critic and judge
    on.generate(CHATS[:2], SamplingParams(temperature=0, max_new_tokens=2))
    assert meter.used() == on.prompt_tokens - PromptTokenCount(requested=5, computed=3)


def test_generation_batches_are_those_of_running_every_prompt_whole() -> None:
    """A decoding step reads each row's whole cache: batches to generate follow whole lengths, heads or not."""
    lengths, heads = [900, 410, 880, 400, 890, 420], [800, 310, 790, 300, 800, 312]
    plans = list(plan_batches(lengths, heads, batch_size=3, max_tokens=1000, decoding=True))
    assert [p.rows for p in plans] == list(length_batches(lengths, 3, 1000)) == [[3, 1], [5], [2], [4], [0]]
    assert [p.heads for p in plans] == [[300, 310], [312], [790], [800], [800]]
    # to score, the same prompts batch by their own parts (what a batch computes)
    assert [p.rows for p in plan_batches(lengths, heads, batch_size=3, max_tokens=1000)] == [[2, 4, 0], [1, 3, 5]]
