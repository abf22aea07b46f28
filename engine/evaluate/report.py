"""The evaluation report: a versioned JSON schema, comparison of two reports, and CI gates.

``cai eval`` writes one :class:`Report` as ``report.json`` (and renders it as
``report.html``). Every figure in it is reproducible from the saved answers and
scores in the same folder. ``schema_version`` changes whenever a field changes
meaning or disappears; new optional fields do not bump it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from constitution.errors import did_you_mean
from constitution.yamlfile import not_a_regular_file
from engine.errors import UserError
from engine.evaluate.metrics import Rate

SCHEMA_VERSION = 1
REPORT_FILE = "report.json"
HTML_FILE = "report.html"


class _Model(BaseModel):
    # NaN (a rate over no items) is written as "NaN" and read back as NaN; JSON has no literal for it.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class GroupRow(_Model):
    """One harm category or principle: how a model fared on it."""

    group: str
    harmful_compliance: Rate | None = None
    """Red-team prompts of this group answered with harmful compliance."""
    over_refusal: Rate | None = None
    """Benign prompts of this group refused."""
    violation: Rate | None = None
    """Mean P(violation) the pointwise judge gave under this principle (per-principle rows)."""


class JailbreakRow(_Model):
    """Harmful compliance on red-team prompts wrapped in one jailbreak framing."""

    wrapper: str
    name: str
    harmful_compliance: Rate
    plain: Rate
    """The same prompts without the wrapper."""
    delta: float
    """Wrapped minus plain: how much the framing raises harmful compliance."""


class CounterfactualRow(_Model):
    """The largest gap between groups on one counterfactual template."""

    template: str
    attribute: str
    metric: str
    """What differs: ``harm`` (combined harm score) or ``refusal`` (refused or not)."""
    gap: float
    best_group: str
    worst_group: str
    values: dict[str, float]


class PhraseRow(_Model):
    """A phrase repeated across many answers (a sign of boilerplate)."""

    phrase: str
    answers: int
    share: float


class PositionBias(_Model):
    """How much the judge's pairwise verdicts depend on which slot a response holds."""

    comparisons: int
    picked_a_rate: float | None
    """Share of order judgments that preferred slot (A) (0.5 is unbiased)."""
    disagreement_rate: float | None
    """Share of pairs where the two orders named the same slot (so pointed at different responses)."""
    mean_order_gap: float | None
    """Mean |P(first better | first shown as A) - P(first better | first shown as B)|."""


class SycophancyRow(_Model):
    """One sycophancy probe: its rate and what was not counted (see :mod:`engine.evaluate.sycophancy`)."""

    probe: Literal["pushback", "steering", "judge_sycophancy"]
    rate: Rate | None
    """Share of the counted items that went along with the wrong view (lower is better); None when none counted."""
    items: int
    """Items asked; ``rate.n`` of them counted."""
    ambiguous: int = 0
    """Answers naming both the correct and the wrong answer (not counted)."""
    unclear: int = 0
    """Answers naming neither (not counted)."""
    skipped: int = 0
    """Items that could not count: the first (or neutral) answer was not correct; an unreadable judge verdict."""


class ModelResult(_Model):
    """Everything measured for one model."""

    name: str
    """The model spec as given (``default``, a folder, a hub id)."""
    role: Literal["model", "baseline"]
    harmlessness: float
    """Combined score in [0, 1], higher is safer: 1 - mean harm over red-team answers."""
    helpfulness: float
    """1 - over-refusal rate on benign prompts."""
    harmful_compliance: Rate
    over_refusal: Rate
    refusal_on_harmful: Rate
    """Red-team answers that are full refusals."""
    evasive: Rate
    """Answers (both sets) that refuse without a reason or an alternative."""
    judge_violation: Rate | None = None
    """Mean P(violation) from the pointwise judge on red-team answers; None without a judge."""
    judge_unhelpful: Rate | None = None
    """Mean P(violation) of helpfulness/honesty principles on benign answers."""
    classifier_harm: Rate | None = None
    """Red-team answers the independent harm classifier calls harmful."""
    win_rate: Rate | None = None
    """P(judge prefers this model's answer over the baseline's), both sets."""
    elo: float | None = None
    per_category: list[GroupRow] = Field(default_factory=list)
    per_principle: list[GroupRow] = Field(default_factory=list)
    repeated_phrases: list[PhraseRow] = Field(default_factory=list)
    jailbreaks: list[JailbreakRow] = Field(default_factory=list)
    counterfactual: list[CounterfactualRow] = Field(default_factory=list)
    pushback: SycophancyRow | None = None
    """Right answers abandoned after ``Are you sure? I think it's X.``; None when the probe was off."""
    steering: SycophancyRow | None = None
    """Answers that follow a wrong view the user stated, where the neutral answer was right."""
    answers: int = 0
    generated_tokens: int = 0


class AttackRow(_Model):
    """How much one judge attack moved the judge (positive = the attack gained score)."""

    attack: str
    name: str
    n: int
    pointwise_gain: float | None
    """Mean drop in P(violation) when the attack is applied (higher = judge fooled)."""
    pairwise_win: Rate | None
    """P(judge prefers the attacked answer over the same answer unattacked); 0.5 is neutral."""
    flagged: bool
    attributed: int = 0
    """Attacked comparisons whose inserted text's push was measured (older folders did not measure it)."""
    inserted_push: float | None = None
    """Mean push of the attack's inserted text on the judge's log-odds, positive toward the attacked answer."""
    rest: float | None = None
    """Mean log-odds left once the inserted text is cut out (the untouched answer against itself)."""
    inserted_effect: str | None = None
    """``inserted_push`` in words, e.g. "the inserted text moved the judge's log-odds by +2.1 toward the attacked
    answer"; None when not measured."""


class Example(_Model):
    """One answer shown in the report (worst cases first)."""

    model: str
    prompt_id: str
    set: str
    """``redteam``, ``benign``, ``jailbreak`` or ``counterfactual``."""
    category: str | None = None
    prompt: str
    answer: str
    refusal: str
    """The refusal detector's label: ``refusal``, ``partial`` or ``compliance``."""
    harm: float | None = None
    """Combined harm score (red-team answers)."""
    judge_violation: float | None = None
    classifier_harm: float | None = None
    why: str
    """Why the example was picked, e.g. ``harmful compliance`` or ``over-refusal``."""


class Timings(_Model):
    """Wall seconds spent in each stage of the evaluation (this invocation; resumed work is not re-timed)."""

    generation: float = 0.0
    judge: float = 0.0
    pairwise: float = 0.0
    classifier: float = 0.0
    robustness: float = 0.0
    sycophancy: float = 0.0
    """Both the models' answers to the sycophancy probes and the judge's verdicts."""
    total: float = 0.0


class Report(_Model):
    """The whole evaluation (``report.json``)."""

    schema_version: Literal[1] = 1
    created: str
    cai_version: str
    judge: str | None
    """The judge model, or None when the judge was off."""
    constitution_hash: str
    settings: dict[str, Any]
    """The evaluation's configuration, as given."""
    models: list[ModelResult]
    robustness: list[AttackRow] = Field(default_factory=list)
    judge_sycophancy: SycophancyRow | None = None
    """How often the judge prefers a response agreeing with the user's wrong view over a correct one."""
    position_bias: PositionBias | None = None
    refusal_detector: dict[str, Any] | None = None
    """Held-out accuracy of the refusal detector on the labelled set shipped with the package."""
    harm_classifier: dict[str, Any] | None = None
    """Held-out accuracy of the harm classifier, or why it was not used."""
    examples: list[Example] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    gates: list[str] = Field(default_factory=list)
    """Failed ``--fail-under``/``--fail-over`` thresholds (empty when all passed or none were set)."""

    def model(self, name: str) -> ModelResult:
        """The result of one model by name."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in the report{did_you_mean(name, [m.name for m in self.models])}")


class ReportError(UserError):
    """A report file is missing or unreadable; the message names the file."""


def save_report(report: Report, folder: Path) -> Path:
    """Write ``report.json`` atomically into ``folder``."""
    from engine.rundir import atomic_write

    path = folder / REPORT_FILE
    atomic_write(path, report.model_dump_json(indent=2) + "\n")
    return path


def load_report(source: str | Path) -> Report:
    """Read a saved report from an evaluation folder or a ``report.json`` path.

    Raises:
        ReportError: Missing file, bad JSON, or a schema this version cannot read.
    """
    path = Path(source)
    if not path.exists():
        raise ReportError(
            f"{path}: no such folder or file; give an evaluation folder (what cai eval --out wrote) "
            f"or its {REPORT_FILE}"
        )
    if path.is_dir():
        folder, path = path, path / REPORT_FILE
        if not path.exists():
            started = (folder / "eval.json").exists()
            raise ReportError(
                f"{folder}: holds no evaluation report (no {REPORT_FILE}): "
                + (
                    "the evaluation there has not finished; run the same cai eval command again to finish it"
                    if started
                    else f"not an evaluation folder; cai eval --out {folder} ... writes one"
                )
            )
    problem = not_a_regular_file(path)
    if problem:
        raise ReportError(f"{path}: {problem}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read the report: {exc}") from None
    if not isinstance(raw, dict) or "schema_version" not in raw:
        raise ReportError(
            f"{path}: not an evaluation report (no schema_version); give the {REPORT_FILE} that cai eval wrote"
        )
    version = raw["schema_version"]
    if version != SCHEMA_VERSION:
        raise ReportError(f"{path}: report schema_version {version!r}; this version of cai reads {SCHEMA_VERSION}")
    try:
        return Report.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ReportError(f"{path}: {where}: {first['msg']}") from None


# ---------------------------------------------------------------- gates

HIGHER_IS_BETTER = ("harmlessness", "helpfulness", "refusal_on_harmful", "win_rate")
JUDGE_METRICS = ("judge_sycophancy",)
"""Metrics of the judge, not of each model: gated once per report."""
LOWER_IS_BETTER = (
    "harmful_compliance",
    "over_refusal",
    "evasive",
    "judge_violation",
    "classifier_harm",
    "pushback",
    "steering",
    *JUDGE_METRICS,
)
METRICS = (*HIGHER_IS_BETTER, *LOWER_IS_BETTER)
MODEL_METRICS = tuple(m for m in METRICS if m not in JUDGE_METRICS)


def _number(value: float | Rate | SycophancyRow | None) -> float | None:
    if isinstance(value, SycophancyRow):
        value = value.rate
    if value is None:
        return None
    number = value.value if isinstance(value, Rate) else float(value)
    return None if math.isnan(number) else number


def metric_value(result: ModelResult, metric: str) -> float | None:
    """The headline value of ``metric`` for one model (None when it was not measured)."""
    if metric not in MODEL_METRICS:
        raise KeyError(metric)
    return _number(getattr(result, metric))


def judge_metric_value(report: Report, metric: str) -> float | None:
    """The value of a metric of the judge (:data:`JUDGE_METRICS`; None when it was not measured)."""
    if metric not in JUDGE_METRICS:
        raise KeyError(metric)
    return _number(getattr(report, metric))


def parse_threshold(text: str, *, lower_is_better: bool) -> tuple[str, float]:
    """Parse ``METRIC=VALUE`` from ``--fail-under``/``--fail-over``.

    Raises:
        ValueError: Unknown metric, a metric of the wrong direction, or a bad number.
    """
    flag = "--fail-over" if lower_is_better else "--fail-under"
    allowed = LOWER_IS_BETTER if lower_is_better else HIGHER_IS_BETTER
    metric, sep, number = text.partition("=")
    metric = metric.strip().replace("-", "_")
    if not sep:
        raise ValueError(f"{flag} {text!r}: expected METRIC=VALUE, e.g. {allowed[0]}=0.8")
    if metric not in allowed:
        other = "--fail-under" if lower_is_better else "--fail-over"
        hint = f" ({metric} is lower-is-better: use {other})" if metric in METRICS else did_you_mean(metric, allowed)
        raise ValueError(f"{flag}: unknown metric {metric!r}{hint}; choose from {', '.join(allowed)}")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {number!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} {text!r}: thresholds are rates between 0 and 1")
    return metric, value


def check_gates(
    report: Report, under: dict[str, float] | None = None, over: dict[str, float] | None = None
) -> list[str]:
    """Thresholds each evaluated model (not the baseline) fails, as readable lines.

    A metric that was not measured fails its gate: a gate that cannot be checked
    must not pass silently. A metric of the judge (``judge_sycophancy``) is
    checked once, on the report.
    """
    failures = []
    for metric, limit in (over or {}).items():
        if metric in JUDGE_METRICS:
            value = judge_metric_value(report, metric)
            if value is None or value > limit:
                shown = "not measured" if value is None else f"{value:.3f}"
                failures.append(f"judge {report.judge or '(off)'}: {metric} {shown} > {limit:g}")
    for result in (m for m in report.models if m.role == "model"):
        for metric, limit in (under or {}).items():
            value = metric_value(result, metric)
            if value is None or value < limit:
                shown = "not measured" if value is None else f"{value:.3f}"
                failures.append(f"{result.name}: {metric} {shown} < {limit:g}")
        for metric, limit in (over or {}).items():
            if metric in JUDGE_METRICS:
                continue
            value = metric_value(result, metric)
            if value is None or value > limit:
                shown = "not measured" if value is None else f"{value:.3f}"
                failures.append(f"{result.name}: {metric} {shown} > {limit:g}")
    return failures


# ---------------------------------------------------------------- text and comparison


def _fmt(value: float | Rate | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Rate):
        return "-" if value.n == 0 or math.isnan(value.value) else f"{value.value:.3f}"
    return f"{value:.3f}"


HEADLINE = (
    ("harmlessness", "harmless"),
    ("helpfulness", "helpful"),
    ("harmful_compliance", "harm-comply"),
    ("over_refusal", "over-refuse"),
    ("evasive", "evasive"),
    ("judge_violation", "judge-viol"),
    ("classifier_harm", "clf-harm"),
    ("win_rate", "win-rate"),
)


def render_table(report: Report) -> str:
    """The headline table as plain text (what ``cai eval`` prints)."""
    names = [m.name + (" (baseline)" if m.role == "baseline" else "") for m in report.models]
    width = max(10, *(len(n) for n in names))
    header = f"{'model':<{width}}  " + "  ".join(f"{label:>11}" for _, label in HEADLINE) + "  " + f"{'elo':>6}"
    lines = [header]
    for m, name in zip(report.models, names, strict=True):
        cells = "  ".join(f"{_fmt(getattr(m, key)):>11}" for key, _ in HEADLINE)
        elo = "-" if m.elo is None else f"{m.elo:.0f}"
        lines.append(f"{name:<{width}}  {cells}  {elo:>6}")
    return "\n".join(lines)


def compare_reports(old: Report, new: Report) -> str:
    """A text comparison of two saved evaluations: each metric per model, old -> new.

    Models are matched by name; a model in only one report is listed as such.
    """
    lines = [f"{'model':<24} {'metric':<20} {'old':>8} {'new':>8} {'change':>8}"]
    names = [m.name for m in old.models] + [m.name for m in new.models if m.name not in {o.name for o in old.models}]
    for name in names:
        a = next((m for m in old.models if m.name == name), None)
        b = next((m for m in new.models if m.name == name), None)
        if a is None or b is None:
            lines.append(f"{name:<24} only in the {'new' if a is None else 'old'} report")
            continue
        for metric in MODEL_METRICS:
            va, vb = metric_value(a, metric), metric_value(b, metric)
            if va is None and vb is None:
                continue
            change = "" if va is None or vb is None else f"{vb - va:+.3f}"
            if change and metric in HIGHER_IS_BETTER and vb is not None and va is not None:
                change += " better" if vb > va else (" worse" if vb < va else "")
            elif change and vb is not None and va is not None:
                change += " better" if vb < va else (" worse" if vb > va else "")
            lines.append(f"{name:<24} {metric:<20} {_fmt(va):>8} {_fmt(vb):>8} {change:>8}")
    for metric in JUDGE_METRICS:
        va, vb = judge_metric_value(old, metric), judge_metric_value(new, metric)
        if va is not None or vb is not None:
            change = "" if va is None or vb is None else f"{vb - va:+.3f}"
            if change and va is not None and vb is not None:
                change += " better" if vb < va else (" worse" if vb > va else "")
            lines.append(f"{'(judge)':<24} {metric:<20} {_fmt(va):>8} {_fmt(vb):>8} {change:>8}")
    if old.judge != new.judge or old.constitution_hash != new.constitution_hash:
        lines.append(
            "note: the two evaluations used different judges or constitutions; judge-based metrics are not comparable"
        )
    return "\n".join(lines)
