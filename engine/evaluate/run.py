"""``cai eval``: answer held-out prompts with each model, score the answers, measure, and report.

:func:`evaluate` runs the stages in order; each is resumable (see
:mod:`engine.evaluate.answers` for the files):

1. **Answers** (:func:`~engine.evaluate.stages.answer_prompts`). Each model
   answers the red-team and benign sets, plus the probes: red-team prompts
   wrapped in jailbreak framings, and counterfactual prompts asked once per
   group (:mod:`engine.evaluate.eval_prompts`). Generation goes through the
   same batched backends as ``cai generate``, greedy by default. Each chunk of
   answers is scored as soon as it is written (:mod:`engine.evaluate.scoring`):
   the refusal detector, the independent harm classifier, and the pointwise
   constitutional judge.
2. **Pairwise** (:func:`~engine.evaluate.stages.compare_models`). The judge
   compares each model's answers with the baseline's (or, without a baseline,
   every pair of models), both orders: win rates and Elo-style ratings. A
   judge model given as ``rm:PATH`` is a preference model
   (:class:`~engine.judge.preference_model.PreferenceModelJudge`): it judges
   this stage alone, as the sigmoid of its two rewards. It gives no
   P(violation), so the pointwise judge scores nothing and the robustness
   battery (which attacks the pointwise judge too) is not run.
3. **Judge robustness** (:func:`~engine.evaluate.stages.attack_judge`).
   Answers of the first model are attacked (flattering preamble, keyword
   stuffing, padding, injected judge instructions, fake delimiters); an attack
   that lowers P(violation) or wins the pairwise comparison against the
   untouched answer is flagged.
4. **Sycophancy** (:mod:`engine.evaluate.sycophancy`). Each model, right
   after its answers, answers the pushback and opinion-steering probes; the
   pairwise judge (a language model or a preference model) compares responses
   that agree with a user's wrong view with correct ones.
5. **Report** (:func:`~engine.evaluate.aggregate.build_report`, no model
   called). Metrics with bootstrap intervals, per category and principle, the
   probes, position bias, examples worst first: ``report.json`` and
   ``report.html``. How each answer counts is in :mod:`engine.evaluate.metrics`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import constitution as constitution_lib
from engine.backends import load_backend
from engine.backends.base import Backend
from engine.backends.reward_model import Scorer, is_reward_spec, load_reward_model
from engine.config import EvalConfig
from engine.evaluate.aggregate import build_report
from engine.evaluate.answers import (
    SETTINGS_FILE,
    AttackRecord,
    EvalStore,
    JudgeSycophancyRecord,
    PairRecord,
    read_all,
)
from engine.evaluate.eval_prompts import eval_prompts
from engine.evaluate.folder import check_settings, move_aside
from engine.evaluate.html import write_html
from engine.evaluate.pointwise import PointwiseJudge
from engine.evaluate.report import Report, Timings, check_gates, save_report
from engine.evaluate.scoring import Scorers, load_classifier
from engine.evaluate.stages import LazyBackend, answer_prompts, attack_judge, compare_models
from engine.evaluate.sycophancy import (
    answer_sycophancy,
    judge_row,
    judge_sycophancy,
    model_rows,
    sycophancy_items,
)
from engine.judge import Judge
from engine.judge.preference_model import PreferenceModelJudge
from engine.judge.principles import PrincipleSampler
from engine.records import JudgeSettings
from engine.rundir import RunDirError, atomic_write

__all__ = ["BackendFactory", "EvalSummary", "evaluate"]

BackendFactory = Callable[..., Backend]
"""Loads a model's backend: ``factory(spec, batch_size=..., dtype=..., device=...)``."""


@dataclass
class EvalSummary:
    """What :func:`evaluate` did."""

    out: Path
    report: Report
    generated: int
    seconds: float
    probed: int = 0
    """Answers generated for the sycophancy probes (not in ``generated``)."""


def evaluate(
    config: EvalConfig,
    *,
    progress: bool = True,
    backends: BackendFactory = load_backend,
    rewards: Callable[..., Scorer] = load_reward_model,
) -> EvalSummary:
    """Run (or resume) an evaluation and write its report.

    Args:
        config: The evaluation's settings.
        progress: Show progress bars.
        backends: Loads each model (the registry of backends by default).
        rewards: Loads a preference model judge (``--judge-model rm:PATH``):
            ``rewards(spec, batch_size=..., dtype=..., device=...)``.

    Returns:
        The report, where it was written, and how much was generated.

    Raises:
        constitution.ConstitutionError, PromptSetError, RunDirError, BackendError:
            Bad input; the message says what to fix.
    """
    start = time.perf_counter()
    timings = Timings()
    rules = constitution_lib.load(config.constitution)
    specs = _model_specs(config)
    prompts = eval_prompts(config)  # every prompt is checked before anything is written
    probes = sycophancy_items(config)
    settings = check_settings(config, rules)
    if config.force:
        move_aside(config, settings)
    store = EvalStore(config.out)
    store.prepare()
    atomic_write(config.out / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")

    options = {"batch_size": config.batch_size, "dtype": config.dtype, "device": config.device}
    judge_backend = LazyBackend(config.judge_model, lambda: backends(config.judge_model, **options))
    sampler = PrincipleSampler(rules, config.judge_principles, config.seed)
    preference = config.judge and is_reward_spec(config.judge_model)
    pointwise = PointwiseJudge(judge_backend, sampler) if config.judge and not preference else None
    classifier, classifier_info = load_classifier(config)
    scorers = Scorers(pointwise, classifier)

    def load(spec: str) -> Backend:
        return judge_backend.get() if config.judge and spec == config.judge_model else backends(spec, **options)

    probed = 0

    def sycophancy(spec: str, backend: Backend) -> None:
        nonlocal probed
        step = time.perf_counter()
        probed += answer_sycophancy(config, spec, backend, store, probes, progress)
        timings.sycophancy += time.perf_counter() - step

    gen_start = time.perf_counter()
    asked = sycophancy if probes.pushback or probes.steering else None
    generated = answer_prompts(config, specs, prompts, store, scorers, load, progress, asked)
    scoring = scorers.seconds["judge"] + scorers.seconds["classifier"]
    timings.generation = time.perf_counter() - gen_start - scoring - timings.sycophancy
    timings.judge = scorers.seconds["judge"]
    timings.classifier = scorers.seconds["classifier"]

    # Only the answers to this run's prompts: a folder may hold answers to prompts a set no longer has.
    wanted = {p.item.id for p in prompts}
    answers = {spec: {r.id: r for r in read_all(store.answers(spec)) if r.id in wanted} for spec in specs}
    pairs: dict[tuple[str, str], list[PairRecord]] = {}
    attacks: list[AttackRecord] = []
    verdicts: list[JudgeSycophancyRecord] = []
    if pointwise is not None:
        pair_judge = Judge(judge_backend, JudgeSettings(seed=config.seed), rules)
        step = time.perf_counter()
        if len(specs) > 1:
            pairs = compare_models(config, specs, store, answers, pair_judge, sampler, progress)
        timings.pairwise = time.perf_counter() - step
        step = time.perf_counter()
        if config.robustness:
            attacks = attack_judge(config, store, answers[specs[0]], pointwise, pair_judge, progress)
        timings.robustness = time.perf_counter() - step
        step = time.perf_counter()
        verdicts = judge_sycophancy(config, store, pair_judge, sampler, probes.judge, progress)
        timings.sycophancy += time.perf_counter() - step
    elif preference and (len(specs) > 1 or probes.judge):
        step = time.perf_counter()
        rm_judge = PreferenceModelJudge(rewards(config.judge_model, **options), JudgeSettings(seed=config.seed))
        if len(specs) > 1:
            pairs = compare_models(config, specs, store, answers, rm_judge, sampler, progress)
        timings.pairwise = time.perf_counter() - step
        step = time.perf_counter()
        verdicts = judge_sycophancy(config, store, rm_judge, sampler, probes.judge, progress)
        timings.sycophancy += time.perf_counter() - step
    timings.total = time.perf_counter() - start

    report = build_report(
        config,
        rules,
        specs,
        answers,
        pairs,
        attacks,
        timings=timings,
        classifier_info=classifier_info,
        sycophancy={spec: model_rows(read_all(store.sycophancy(spec)), probes, config.seed) for spec in specs},
        judge_sycophancy=judge_row(verdicts, config.seed),
    )
    report.gates = check_gates(report, config.fail_under, config.fail_over)
    save_report(report, config.out)
    write_html(report, config.out)
    return EvalSummary(config.out, report, generated, time.perf_counter() - start, probed)


def _model_specs(config: EvalConfig) -> list[str]:
    """The models to answer: ``--model`` in order, then the baseline."""
    specs = list(config.models)
    if len(set(specs)) != len(specs):
        raise RunDirError("the same --model is given twice")
    if config.baseline is not None:
        if config.baseline in specs:
            raise RunDirError(f"{config.baseline} is both a --model and the --baseline")
        specs.append(config.baseline)
    return specs
