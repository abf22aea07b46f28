"""Auditing judges: which items a labelled file gives each protocol, and every judge scored on them.

:func:`load_audit_items` reads a labelled file for the protocols asked for
(``ours``, ``as-written``, ``both`` or ``auto``); :func:`audit_judges` scores
each judge under each of them and gathers a
:class:`~engine.audit.report.JudgeReport`.

A judge given as ``rm:PATH`` is a preference model
(:class:`~engine.judge.preference_model.PreferenceModelJudge`): it is scored by
our protocol only, as ``sigmoid(r(a) - r(b))`` of its two rewards (no principle
applies; its position bias is zero by construction). It is NOT scored as
written: that protocol asks a language model the file's own multiple-choice
question and reads the log-probability of each option label, and a preference
model reads no question. Scoring each option text as a response instead would
be our protocol again where the options are responses (the published file's
options already become our comparisons), and meaningless where they are phrases
(a harm category is not a reply). So on a file that gives both protocols the
preference model gets ours and the report says why it has no as-written score;
on items for the as-written protocol only (``--protocol as-written``, or a file
whose options are phrases) it is refused with one message, before any model loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from constitution import Constitution
from engine.audit.accuracy import (
    AS_WRITTEN,
    OURS,
    JudgeEval,
    comparison_principles,
    evaluate_as_written,
    evaluate_judge,
)
from engine.audit.choice_files import ChoiceItem, is_option_label, load_choice_items
from engine.audit.comparisons import BUILTIN_COMPARISONS, JudgeDataError, LabelledComparison, load_comparisons
from engine.audit.report import JudgeReport
from engine.backends.base import Backend
from engine.backends.reward_model import Scorer, is_reward_spec, load_reward_model
from engine.errors import USAGE, UserError
from engine.judge.pairwise import Judge
from engine.judge.preference_model import PreferenceModelJudge, refuse_settings
from engine.records.labels import JudgeSettings
from engine.sources import sample_ids

_Item = TypeVar("_Item", LabelledComparison, ChoiceItem)


@dataclass(frozen=True)
class AuditItems:
    """What one labelled file gives each protocol."""

    file: str
    comparisons: tuple[LabelledComparison, ...]
    """For our protocol (empty: not scored by it)."""
    choices: tuple[ChoiceItem, ...]
    """For the file's own prompt (empty: not scored as written)."""
    notes: tuple[str, ...] = ()


def published_shape(source: str | Path) -> bool:
    """Whether a file looks like a published multiple-choice evaluation (its first line's ``corrects`` are letters)."""
    path = Path(source)
    if str(source) == "builtin" or not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        return False
                    corrects = row.get("corrects")
                    return (
                        isinstance(row.get("prompt"), str)
                        and isinstance(corrects, list)
                        and bool(corrects)
                        and all(is_option_label(v) for v in corrects)
                    )
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # the loaders say what is wrong with the file
    return False


def load_audit_items(source: str | Path, protocol: str, *, limit: int | None = None, seed: int = 0) -> AuditItems:
    """The items of a labelled file (``builtin``, a JSONL file, a reviewed run folder) for ``protocol``.

    ``auto`` scores a published multiple-choice file by both protocols (as
    written only when its options are not responses) and anything else by ours.

    Raises:
        JudgeDataError: The file cannot be read, or cannot be scored by the protocol asked for.
    """
    where = "builtin" if str(source) == "builtin" else str(source)
    published = published_shape(source)
    if protocol in (AS_WRITTEN, "both") and not published:
        raise JudgeDataError(
            f"--protocol {protocol} needs a published multiple-choice file (the whole question as `prompt`, "
            "with an `Options:` block, and `corrects`/`incorrects` holding option letters such as ' (A)'); "
            "score this one with --protocol ours",
            file=where,
        )
    notes: list[str] = []
    choices: list[ChoiceItem] = []
    if published:
        choices = load_choice_items(source)
        if limit is not None:
            choices = sample_items(choices, limit, seed)
    comparisons: list[LabelledComparison] = []
    if protocol in (OURS, "both") or (protocol == "auto" and (not published or _all_responses(choices))):
        comparisons = load_comparisons(source)
    elif protocol == "auto":
        try:  # options that are not responses, unless the lines give the two transcripts
            comparisons = load_comparisons(source)
        except JudgeDataError as exc:
            notes.append(f"scored as written only: our protocol compares two responses, and {exc}")
    if published:
        lines = {c.line for c in choices}
        comparisons = [c for c in comparisons if c.line in lines]
    elif limit is not None:
        comparisons = sample_items(comparisons, limit, seed)
    scored_as_written = protocol in (AS_WRITTEN, "both") or (protocol == "auto" and published)
    if source == "builtin" or Path(source) == BUILTIN_COMPARISONS:
        notes.append(
            "the shipped set was written by this project: in-house evidence only; "
            "measure a judge on the field's published evaluations too"
        )
    return AuditItems(where, tuple(comparisons), tuple(choices) if scored_as_written else (), tuple(notes))


def _all_responses(choices: Sequence[ChoiceItem]) -> bool:
    return all(c.responses for c in choices)


def sample_items(items: Sequence[_Item], limit: int, seed: int) -> list[_Item]:
    """A sample of ``limit`` items spread over their categories, as ``cai eval --limit`` takes prompts."""
    chosen = sample_ids(((c.id, None, c.category) for c in items), limit, seed=seed)
    return [c for c in items if c.id in chosen]


def audit_judges(
    specs: Sequence[str],
    backends: Callable[[str], Backend],
    items: AuditItems,
    constitution: Constitution,
    settings: JudgeSettings,
    *,
    rewards: Callable[[str], Scorer] = load_reward_model,
) -> JudgeReport:
    """Score every judge (a model spec each, loaded one at a time) under every protocol ``items`` holds.

    Args:
        rewards: Loads the preference model of an ``rm:PATH`` spec (scored by our protocol only,
            see the module docstring).

    Raises:
        UserError: A preference model with nothing to score by our protocol, or with chain of thought.
    """
    notes = list(items.notes)
    for spec in specs:
        if is_reward_spec(spec):
            refuse_settings(spec, settings)
            if not items.comparisons:
                raise UserError(_not_as_written(spec, items), exit_code=USAGE)
            if items.choices:
                notes.append(
                    f"{spec} is a preference model: scored by our protocol only (sigmoid of its two rewards); "
                    "the as-written protocol asks a language model the file's own question, and it reads none"
                )
    principles = comparison_principles(items.comparisons, constitution, settings.principles, settings.seed)
    evaluations: list[JudgeEval] = []
    for spec in specs:
        if is_reward_spec(spec):
            judge = PreferenceModelJudge(rewards(spec), settings)
            evaluations.append(evaluate_judge(judge, items.comparisons, principles, file=items.file))
            del judge
            continue
        backend = backends(spec)
        if items.comparisons:
            evaluations.append(
                evaluate_judge(Judge(backend, settings, constitution), items.comparisons, principles, file=items.file)
            )
        if items.choices:
            evaluations.append(evaluate_as_written(backend, items.choices, file=items.file))
        del backend
    evaluations.sort(key=lambda e: e.protocol != OURS)  # ours first, each protocol's judges in the order given
    return JudgeReport.of(items.file, evaluations, notes)


def _not_as_written(spec: str, items: AuditItems) -> str:
    why = (
        f"{spec} is a preference model: it scores responses and reads no question, so it cannot be scored "
        f"as written (the file's own multiple-choice prompt, read by a language model)"
    )
    if items.choices and _all_responses(items.choices):
        return f"{why}; score it on {items.file} with --protocol ours (its options are responses)"
    return (
        f"{why}; the options of {items.file} are not responses, so there is nothing a preference model can "
        "score: give it a file of labelled comparisons (responses to a conversation)"
    )
