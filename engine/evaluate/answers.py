"""What ``cai eval`` stores while it runs: one scored answer per prompt per model, and judge verdicts.

An evaluation folder holds::

    eval.json                      settings the stored answers depend on (checked on resume)
    answers/<model>.jsonl          one AnswerRecord per prompt: the answer and every per-answer score
    pairwise/<model>--<other>.jsonl  the judge's verdict per prompt on two models' answers
    robustness.jsonl               the judge on attacked answers
    sycophancy/<model>.jsonl       answers to the sycophancy probes (pushback, opinion steering)
    judge_sycophancy.jsonl         the judge on agreeing vs correct responses
    report.json, report.html

Every ``.jsonl`` file is an append-only :class:`engine.rundir.JsonlLog`, so a
killed evaluation resumes where it stopped and never scores an answer twice.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.rundir import JsonlLog

SETTINGS_FILE = "eval.json"
ANSWERS_DIR = "answers"
PAIRWISE_DIR = "pairwise"
ROBUSTNESS_FILE = "robustness.jsonl"
SYCOPHANCY_DIR = "sycophancy"
JUDGE_SYCOPHANCY_FILE = "judge_sycophancy.jsonl"

PromptSetName = Literal["redteam", "benign", "jailbreak", "counterfactual"]
RefusalLabel = Literal["refusal", "partial", "compliance"]


class AnswerRecord(BaseModel):
    """One model's answer to one evaluation prompt, with what every scorer said about it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    set: PromptSetName
    category: str | None
    kind: str | None
    messages: list[dict[str, str]]
    answer: str
    tokens: int
    refusal: RefusalLabel
    evasive: bool
    classifier_harm: float | None = None
    """P(harmful) from the independent classifier (red-team, jailbreak and counterfactual answers)."""
    judge_violation: float | None = None
    """P(the answer violates its relevant principles) from the pointwise judge."""
    judge_principles: dict[str, float] = Field(default_factory=dict)
    source_id: str | None = None
    """Jailbreak: the red-team prompt that was wrapped."""
    wrapper: str | None = None
    template: str | None = None
    """Counterfactual: the template, attribute and group of this prompt."""
    attribute: str | None = None
    group: str | None = None

    @property
    def prompt(self) -> str:
        """The last user message."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


class PairRecord(BaseModel):
    """The judge on two models' answers to one prompt (``first`` is the file's first model)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    set: PromptSetName
    p_first: float | None
    p_first_shown_first: float | None
    p_first_shown_second: float | None
    disagreed: bool
    picked_a: list[bool] = Field(default_factory=list)
    """Per order judgment that was read and not a tie: did the judge prefer slot (A)?"""
    principles: list[str] = Field(default_factory=list)


class InsertedPush(BaseModel):
    """What the attack's own text did to the attacked comparison: occlusion of the whole inserted text at once.

    Read as :mod:`engine.explain.occlusion` reads a pair, the attacked answer
    first: log-odds of P(the attacked answer is better), positive toward the
    attacked answer. ``inserted + rest == log_odds``. Per-sentence detail is
    what ``cai explain`` gives.
    """

    model_config = ConfigDict(extra="forbid")

    log_odds: float
    """Log-odds of P(attacked better) on the attacked comparison (clamped as :func:`engine.explain.log_odds`)."""
    inserted: float | None
    """The inserted text's push: ``log_odds`` minus the log-odds once it is cut out. None: that was unreadable."""
    rest: float | None
    """The log-odds left once the inserted text is removed: the untouched answer against itself, so what the rest of
    the attacked answer (and the judge's habits about order and whitespace) accounts for."""


class AttackRecord(BaseModel):
    """The judge on one answer before and after one attack."""

    model_config = ConfigDict(extra="forbid")

    id: str
    attack: str
    original_violation: float | None
    attacked_violation: float | None
    p_attacked_better: float | None
    """Pairwise: P(the judge prefers the attacked answer over the original)."""
    disagreed: bool = False
    picked_a: list[bool] = Field(default_factory=list)
    attribution: InsertedPush | None = None
    """The inserted text's share of the pairwise verdict; None in records written before it was measured, or when
    the attacked comparison itself was unreadable."""


class SycophancyRecord(BaseModel):
    """One model's answer to one turn of a sycophancy probe (see :mod:`engine.evaluate.sycophancy`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    """``ITEM~TURN``: one record per question and turn."""
    item: str
    probe: Literal["pushback", "steering"]
    turn: Literal["first", "pushback", "neutral", "steered"]
    messages: list[dict[str, str]]
    answer: str
    tokens: int


class JudgeSycophancyRecord(BaseModel):
    """The judge on one item's agreeing (wrong) response against its correct one."""

    model_config = ConfigDict(extra="forbid")

    id: str
    p_agreeing: float | None
    """P(the judge prefers the agreeing response), both orders; None when unreadable."""
    disagreed: bool = False
    picked_a: list[bool] = Field(default_factory=list)


def slug(spec: str) -> str:
    """A file name for a model spec: readable, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.strip("/").rsplit("/", 2)[-1] if "/" in spec else spec)[:40]
    return f"{readable or 'model'}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


class EvalStore:
    """The files of one evaluation folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def answers(self, spec: str) -> JsonlLog[AnswerRecord]:
        """The answers of one model."""
        return JsonlLog(self.folder / ANSWERS_DIR / f"{slug(spec)}.jsonl", AnswerRecord, "answer")

    def pairwise(self, first: str, second: str) -> JsonlLog[PairRecord]:
        """The judge's verdicts on ``first``'s answers against ``second``'s."""
        return JsonlLog(self.folder / PAIRWISE_DIR / f"{slug(first)}--{slug(second)}.jsonl", PairRecord, "pairwise")

    def robustness(self) -> JsonlLog[AttackRecord]:
        """The judge-robustness battery."""
        return JsonlLog(self.folder / ROBUSTNESS_FILE, AttackRecord, "robustness")

    def sycophancy(self, spec: str) -> JsonlLog[SycophancyRecord]:
        """The answers of one model to the sycophancy probes."""
        return JsonlLog(self.folder / SYCOPHANCY_DIR / f"{slug(spec)}.jsonl", SycophancyRecord, "sycophancy answer")

    def judge_sycophancy(self) -> JsonlLog[JudgeSycophancyRecord]:
        """The judge on agreeing vs correct responses."""
        return JsonlLog(self.folder / JUDGE_SYCOPHANCY_FILE, JudgeSycophancyRecord, "judge sycophancy")

    def prepare(self) -> None:
        """Create the folders (called once the settings are checked)."""
        (self.folder / ANSWERS_DIR).mkdir(parents=True, exist_ok=True)
        (self.folder / PAIRWISE_DIR).mkdir(parents=True, exist_ok=True)
        (self.folder / SYCOPHANCY_DIR).mkdir(parents=True, exist_ok=True)


def read_all(log: JsonlLog[Any]) -> list[Any]:
    """Every record of a log, a torn last line repaired first."""
    return list(log.rows(repair=True))
