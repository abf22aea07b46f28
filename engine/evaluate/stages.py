"""The stages of ``cai eval`` that call models: answers, pairwise verdicts, judge robustness.

Each stage appends to its log in the evaluation folder (see
:mod:`engine.evaluate.answers`) chunk by chunk and skips what is already
there, so a killed evaluation resumes where it stopped and never asks a model
the same thing twice.

1. :func:`answer_prompts`: each model answers every prompt; each chunk is
   scored (:class:`~engine.evaluate.scoring.Scorers`) as soon as it is
   generated, then saved.
2. :func:`compare_models`: the judge compares each model's answers with the
   baseline's (or, without a baseline, every pair of models), both orders.
3. :func:`attack_judge`: answers of the first model are attacked (flattering
   preamble, keyword stuffing, padding, injected judge instructions, fake
   delimiters) and judged again, pointwise and against the untouched answer.
   In the same batched call the judge also sees the attacked pair with the
   attack's inserted text cut out as one unit
   (:func:`engine.explain.occlusion.occlude`), which gives the inserted text's
   push on the verdict (:class:`~engine.evaluate.answers.InsertedPush`). Cut
   out, the inserted text leaves the untouched answer against itself, the same
   pair for every attack on one answer, so it is judged once per answer: the
   battery's pairwise cost grows by one comparison per answer, not per attack.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.backends.base import Backend, Chat, Completion, SamplingParams, ScoreRequest
from engine.config import EvalConfig
from engine.evaluate.answers import AnswerRecord, AttackRecord, EvalStore, InsertedPush, PairRecord, read_all
from engine.evaluate.eval_prompts import EvalPrompt
from engine.evaluate.pointwise import Answer, PointwiseJudge
from engine.evaluate.probes.judge_attacks import ATTACKS, attack_parts
from engine.evaluate.scoring import Scorers
from engine.explain.occlusion import Cut, Occluded, log_odds, occlude
from engine.explain.sentences import Span
from engine.judge import Pair
from engine.judge.panel import PairJudge
from engine.judge.principles import PrincipleSampler
from engine.progress import chunked, progress_bar
from engine.records import TIE, Comparison
from engine.rundir import RunDirError
from engine.sources import sample_ids

__all__ = [
    "COMPARED_SETS",
    "LazyBackend",
    "answer_prompts",
    "attack_judge",
    "compare_models",
    "matchups",
    "picked_a",
    "stored_answers",
]

COMPARED_SETS = ("redteam", "benign")
"""The sets whose answers the judge compares pairwise."""


class LazyBackend(Backend):
    """A backend that loads its model on first use (a judge that has nothing left to judge never loads)."""

    def __init__(self, name: str, load: Callable[[], Backend]) -> None:
        """Remember how to load the backend; nothing is loaded yet."""
        self.name = name
        self._load = load
        self._backend: Backend | None = None

    def get(self) -> Backend:
        """The loaded backend."""
        if self._backend is None:
            self._backend = self._load()
        return self._backend

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        return self.get().generate(chats, params)

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        return self.get().score(requests)

    def describe(self) -> dict[str, Any]:
        return self.get().describe()


# ---------------------------------------------------------------- answers


def stored_answers(store: EvalStore, spec: str, wanted: Mapping[str, EvalPrompt]) -> list[AnswerRecord]:
    """The stored answers of a model to the prompts of this run.

    Raises:
        RunDirError: A stored answer replies to a prompt whose text changed since.
    """
    records = [r for r in read_all(store.answers(spec)) if r.id in wanted]
    changed = [r.id for r in records if r.messages != wanted[r.id].item.messages]
    if changed:
        shown = ", ".join(repr(i) for i in changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise RunDirError(
            f"{store.folder}: {spec} answered {shown} when {'that prompt' if len(changed) == 1 else 'those prompts'} "
            "said something else (the prompt file was edited since); give each edited prompt a new id, "
            "restore the old text, or use another --out"
        )
    return records


def answer_prompts(
    config: EvalConfig,
    specs: Sequence[str],
    prompts: Sequence[EvalPrompt],
    store: EvalStore,
    scorers: Scorers,
    load: Callable[[str], Backend],
    progress: bool,
    then: Callable[[str, Backend], None] | None = None,
) -> int:
    """Have each model answer the prompts it has not answered yet; score and save chunk by chunk.

    Args:
        config: The evaluation's settings (sampling, chunk size).
        specs: The models, in order; one is loaded at a time.
        prompts: Every prompt of this run.
        store: The evaluation folder.
        scorers: Score each chunk before it is saved.
        load: Loads a model's backend by its spec.
        progress: Show a progress bar per model.
        then: Called with each model and its backend once its answers are in
            (the sycophancy probes). The backend is loaded on first use, so a
            model with nothing left to answer is never loaded.

    Returns:
        How many answers were generated (not counting what ``then`` generated).

    Raises:
        RunDirError: A stored answer replies to a prompt that changed since.
    """
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed)
    wanted = {p.item.id: p for p in prompts}
    generated = 0
    for spec in specs:
        done = {r.id for r in stored_answers(store, spec, wanted)}
        todo = [p for p in prompts if p.item.id not in done]
        if then is None and not todo:
            continue
        backend = LazyBackend(spec, functools.partial(load, spec))
        log = store.answers(spec)
        bar = progress_bar(len(todo), progress and bool(todo), f"answers {spec}", "answer")
        try:
            for chunk in chunked(todo, config.chunk_size):
                completions = backend.generate([p.item.messages for p in chunk], sampling)
                log.append(scorers.score(chunk, [c.text for c in completions], [c.tokens for c in completions]))
                generated += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if then is not None:
            then(spec, backend)
        del backend  # one evaluated model in memory at a time
    return generated


# ---------------------------------------------------------------- pairwise


def matchups(config: EvalConfig, specs: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of models the judge compares: each model with the baseline, or every pair."""
    if config.baseline is not None:
        return [(m, config.baseline) for m in config.models]
    return list(itertools.combinations(specs, 2))


def picked_a(judgment: Comparison) -> list[bool]:
    """Per order judgment that was read and not a tie: did the judge prefer slot (A)?"""
    return [o.p_a > 0.5 for o in judgment.judgments if o.p_a is not None and abs(o.p_a - 0.5) > TIE]


def compare_models(
    config: EvalConfig,
    specs: Sequence[str],
    store: EvalStore,
    answers: dict[str, dict[str, AnswerRecord]],
    judge: PairJudge,
    sampler: PrincipleSampler,
    progress: bool,
) -> dict[tuple[str, str], list[PairRecord]]:
    """The judge's verdicts on each matchup's answers to the same red-team and benign prompts.

    Args:
        config: The evaluation's settings.
        specs: The models, in order.
        store: The evaluation folder.
        answers: Each model's answers by prompt id.
        judge: The pairwise judge (a language model, or a preference model).
        sampler: Picks the principles of each answer.
        progress: Show a progress bar per matchup.

    Returns:
        The verdicts per ``(first, second)`` matchup, on the answers both models gave.
    """
    out: dict[tuple[str, str], list[PairRecord]] = {}
    for first, second in matchups(config, specs):
        log = store.pairwise(first, second)
        have = {r.id: r for r in read_all(log)}
        common = [
            rid
            for rid, rec in answers[first].items()
            if rec.set in COMPARED_SETS and rid in answers[second] and rid not in have
        ]
        bar = progress_bar(len(common), progress and bool(common), f"pairwise {first} vs {second}", "pair")
        for chunk in chunked(common, config.chunk_size):
            batch = []
            for rid in chunk:
                a, b = answers[first][rid], answers[second][rid]
                principles = sampler.for_answer(a.id, a.category, benign=a.set == "benign")
                batch.append(Pair(a.messages, a.answer, b.answer, principles))
            judged = judge.compare(batch)
            records = [
                PairRecord(
                    id=rid,
                    set=answers[first][rid].set,
                    p_first=j.p_first,
                    p_first_shown_first=j.p_first_shown_first,
                    p_first_shown_second=j.p_first_shown_second,
                    disagreed=j.disagreed,
                    picked_a=picked_a(j),
                    principles=list(j.principles),
                )
                for rid, j in zip(chunk, judged, strict=True)
            ]
            log.append(records)
            have.update((r.id, r) for r in records)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        out[(first, second)] = [r for r in have.values() if r.id in answers[first] and r.id in answers[second]]
    return out


# ---------------------------------------------------------------- judge robustness


def attack_judge(
    config: EvalConfig,
    store: EvalStore,
    answers: dict[str, AnswerRecord],
    pointwise: PointwiseJudge,
    judge: PairJudge,
    progress: bool,
) -> list[AttackRecord]:
    """Attack judged red-team answers with every judge attack and judge them again.

    ``config.robustness`` answers are picked, spread over the harm categories
    as ``--limit`` is; each attacked answer is judged pointwise and against the
    untouched answer, and the attacked comparison is attributed to the
    attack's inserted text (module docstring).

    Args:
        config: The evaluation's settings.
        store: The evaluation folder.
        answers: The first model's answers by prompt id.
        pointwise: The pointwise judge.
        judge: The pairwise judge.
        progress: Show a progress bar.

    Returns:
        One record per picked answer and attack.
    """
    log = store.robustness()
    have = {(r.id, r.attack): r for r in read_all(log)}
    judged = [r for r in answers.values() if r.set == "redteam" and r.judge_violation is not None]
    chosen = sample_ids(((r.id, r.kind, r.category) for r in judged), config.robustness, seed=config.seed)
    picked = [r for r in judged if r.id in chosen]  # spread over the harm categories, as --limit is
    todo = [(r, a.id) for r in picked for a in ATTACKS if (r.id, a.id) not in have]
    bar = progress_bar(len(todo), progress and bool(todo), "judge robustness", "attack")
    for chunk in chunked(todo, config.chunk_size):
        parts = [attack_parts(r.answer, attack) for r, attack in chunk]
        attacked = [before + r.answer + after for (r, _), (before, after) in zip(chunk, parts, strict=True)]
        found = pointwise.judge(
            [Answer(r.id, r.messages, text, r.category) for (r, _), text in zip(chunk, attacked, strict=True)]
        )
        pairs = [
            Pair(r.messages, text, r.answer, pointwise.sampler.for_answer(r.id, r.category, benign=False))
            for (r, _), text in zip(chunk, attacked, strict=True)
        ]
        compared = occlude(judge, [(pair, [_inserted(pair, part)]) for pair, part in zip(pairs, parts, strict=True)])
        records = [
            AttackRecord(
                id=r.id,
                attack=attack,
                original_violation=r.judge_violation,
                attacked_violation=v.p_violation,
                p_attacked_better=j.p_first,
                disagreed=j.comparison.disagreed,
                picked_a=picked_a(j.comparison),
                attribution=_attribution(j),
            )
            for (r, attack), v, j in zip(chunk, found, compared, strict=True)
        ]
        log.append(records)
        have.update(((rec.id, rec.attack), rec) for rec in records)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    wanted = {(r.id, a.id) for r in picked for a in ATTACKS}
    return [rec for key, rec in have.items() if key in wanted]


def _inserted(pair: Pair, parts: tuple[str, str]) -> Cut:
    """The attack's inserted text in the attacked response (the pair's first), as one cut."""
    before, after = parts
    end = len(pair.first)
    spans = [Span(0, len(before)), Span(end - len(after), end)]
    return Cut(first=tuple(span for span in spans if span.end > span.start))


def _attribution(found: Occluded) -> InsertedPush | None:
    """The inserted text's push on the attacked comparison; None when the comparison was unreadable."""
    if found.p_first is None:
        return None
    total = log_odds(found.p_first)
    (push,) = found.pushes
    return InsertedPush(log_odds=total, inserted=push, rest=None if push is None else total - push)
