"""What the judge wrote about a run: ``labels.json`` (who judged, how) and one :class:`Label` per row.

A :class:`Label` says which two candidates of a trajectory make its
preference pair (or why none does) with the soft label, and keeps every
:class:`Comparison` the judge made among the candidates, each with its
per-principle, per-order :class:`Judgment`. The same :class:`Comparison` is
what the judge returns for any pair of responses (``cai judge-eval`` too).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from engine.backends.base import SamplingParams
from engine.records.base import SCHEMA_VERSION, Record
from engine.records.trajectory import ConstitutionRef, Trajectory

LabelSource = Literal["ai_judge", "preference_model", "revision_assumed_better", "human"]
"""Who put a dataset pair in its order (the ``label_source`` column)."""
AI_JUDGE: LabelSource = "ai_judge"
"""The AI-feedback judge chose and rejected."""
PREFERENCE_MODEL: LabelSource = "preference_model"
"""A trained preference model (``rm:PATH``, alone or a panel of them) chose and rejected by its rewards."""
REVISION_ASSUMED_BETTER: LabelSource = "revision_assumed_better"
"""No judge: the final revision is taken to beat the first answer."""
HUMAN: LabelSource = "human"
"""A person decided the order in ``cai review``."""

TIE = 1e-6
"""Probabilities within this distance of 0.5 are ties."""

Verdict = Literal["A", "B"]
Pairing = Literal["best-worst", "final-initial"]
Status = Literal["labelled", "tie", "low-margin", "unparsed", "single"]
DROPPED: tuple[Status, ...] = ("tie", "low-margin", "unparsed")
"""Statuses of rows the judge compared but gave no pair."""


class JudgeSettings(Record):
    """How the judge labels pairs (recorded with every label)."""

    principles: int = Field(
        default=1, ge=1, description="Principles sampled per pair; their probabilities are averaged."
    )
    seed: int = Field(default=0, description="Seed of principle sampling (with the row id) and of CoT sampling.")
    cot: bool = Field(default=False, description="Let the judge reason before answering (chain of thought).")
    cot_reader: Literal["score", "parse"] = Field(
        default="score",
        description="CoT: score the options after the reasoning (needs log-probs) or parse the written verdict.",
    )
    band: tuple[float, float] = Field(
        default=(0.4, 0.6), description="CoT: each order's probability is clamped to this interval."
    )
    cot_max_new_tokens: int = Field(default=160, ge=1, description="CoT: most tokens of reasoning.")
    cot_temperature: float = Field(default=0.0, ge=0, description="CoT: sampling temperature (0: greedy).")
    pairing: Pairing = Field(
        default="best-worst", description="best-worst: all candidates compared; final-initial: final vs first only."
    )
    min_margin: float = Field(
        default=0.02, ge=0, le=1, description="Pairs with margin (2 * chosen_prob - 1) below this are dropped."
    )
    aggregate: Literal["mean", "majority"] = Field(
        default="mean",
        description="Several judges: the label is their mean probability, or the share of them voting for a response.",
    )

    @model_validator(mode="after")
    def _band_holds_half(self) -> JudgeSettings:
        low, high = self.band
        if not 0 <= low <= 0.5 <= high <= 1:
            raise ValueError(f"band must satisfy 0 <= low <= 0.5 <= high <= 1, not {low}-{high}")
        return self

    @property
    def cot_sampling(self) -> SamplingParams:
        """Sampling of the chain-of-thought reasoning."""
        return SamplingParams(max_new_tokens=self.cot_max_new_tokens, temperature=self.cot_temperature, seed=self.seed)


class Judgment(Record):
    """The judge's answer for one pair, one principle, one order of the responses."""

    principle_id: str
    first_as: Verdict = Field(description="The slot the pair's first response held in this prompt.")
    p_a: float | None = Field(description="P(the response in slot (A) is better), after clamping; None: unparsed.")
    raw_p_a: float | None = Field(description="The same before clamping (equal outside chain-of-thought mode).")
    logprobs: tuple[float, float] | None = Field(description="Option log-probabilities; None: nothing scored.")
    text: str | None = Field(default=None, description="Chain of thought: the judge's reply, exactly as generated.")
    stated: Verdict | None = Field(default=None, description="Chain of thought: the verdict the reply wrote, if any.")
    unparsed: bool = False
    judge: str | None = Field(default=None, description="Several judges: the one that made this judgment.")

    @property
    def p_first(self) -> float | None:
        """P(the pair's first response is better) according to this order."""
        if self.p_a is None:
            return None
        return self.p_a if self.first_as == "A" else 1.0 - self.p_a


class Comparison(Record):
    """The judged preference between a pair's first and second response (both orders, all principles)."""

    first: str = Field(default="", description="The first response's candidate name (initial, revision_N).")
    second: str = ""
    p_first: float | None = Field(
        description="P(first is better): mean over the principles read in both orders; None when there is none."
    )
    p_first_shown_first: float | None = Field(description="Mean P(first is better) with the first shown as (A).")
    p_first_shown_second: float | None = Field(description="The same with the first response shown as (B).")
    principles: tuple[str, ...] = Field(description="Principles the pair was judged under (all sampled, read or not).")
    disagreed: bool = Field(description="The two orders point at different responses (position bias).")
    unparsed: int = Field(description="Order judgments that could not be read.")
    judgments: list[Judgment] = Field(description="Per principle and order: probabilities, raw text, parse.")
    by_judge: dict[str, float | None] = Field(
        default_factory=dict, description="Several judges: each judge's own P(first is better)."
    )
    split: bool = Field(default=False, description="Several judges: their votes point at different responses.")
    rewards: tuple[float, float] | None = Field(
        default=None,
        description="A preference model: its rewards of the first and second response (p_first is the sigmoid "
        "of their difference); None: judged by a language model, a panel, or a reward was not finite.",
    )

    @property
    def by_preference_model(self) -> bool:
        """Made by preference models alone: no language model read a prompt for it (no judgment in it)."""
        return not self.judgments

    @property
    def winner(self) -> Literal["first", "second", "tie"] | None:
        """Which response the judge prefers; None when the pair could not be judged."""
        if self.p_first is None:
            return None
        if abs(self.p_first - 0.5) <= TIE:
            return "tie"
        return "first" if self.p_first > 0.5 else "second"

    def named(self, first: str, second: str) -> Comparison:
        """The same judgment, recorded as a comparison of these two candidates."""
        return self.model_copy(update={"first": first, "second": second})


class Label(Record):
    """The judge's verdict on one trajectory: which candidates make its pair, or why none does."""

    schema_version: int = SCHEMA_VERSION
    id: str = Field(description="The trajectory's (prompt's) id.")
    status: Status
    chosen_from: str | None = Field(description="Candidate chosen (or that would have been): initial or revision_N.")
    rejected_from: str | None
    chosen_prob: float | None = Field(description="Soft label: P(chosen is better than rejected).")
    margin: float | None = Field(description="2 * chosen_prob - 1.")
    judge_model: str
    principles: list[str]
    candidates: list[str]
    strengths: list[float | None] = Field(description="Each candidate's mean probability of beating the others.")
    comparisons: list[Comparison]

    @property
    def labelled(self) -> bool:
        return self.status == "labelled"

    @property
    def by_preference_model(self) -> bool:
        """Every comparison was made by preference models alone (``label_source`` ``preference_model``)."""
        return bool(self.comparisons) and all(c.by_preference_model for c in self.comparisons)

    def pair_texts(self, trajectory: Trajectory) -> tuple[str, str] | None:
        """(chosen, rejected) texts of the trajectory this label judged; None unless the row is labelled."""
        if not self.labelled or self.chosen_from is None or self.rejected_from is None:
            return None
        texts = trajectory.texts()
        return texts[self.chosen_from], texts[self.rejected_from]


class JudgeCheck(Record):
    """The judge measured on a labelled calibration set before it labelled a run (the judge gate)."""

    source: str = Field(description="The calibration set: builtin (written by this project) or a file.")
    items: int = Field(description="Comparisons judged (both orders each).")
    correct: int
    accuracy: float
    low: float = Field(description="Lower end of the accuracy's 95% (Wilson) interval.")
    high: float
    position_bias_rate: float | None = Field(
        description="Share of comparisons whose two orders pointed at different responses."
    )
    items_hash: str = Field(description="sha256 of the comparisons judged: a resumed run reuses a check of the same.")
    seconds: float

    @property
    def in_house(self) -> bool:
        return self.source == "builtin"

    @property
    def at_chance(self) -> bool:
        """The interval reaches 50%: the judge is not shown to be better than a coin."""
        return self.low <= 0.5

    @property
    def guessing(self) -> bool:
        """The two orders disagreed on most comparisons: the judge names a slot, not a response."""
        return self.position_bias_rate is not None and self.position_bias_rate > 0.5

    def summary(self) -> str:
        """One line: the accuracy, its interval and the position bias."""
        where = "the builtin calibration set (written by this project)" if self.in_house else self.source
        bias = "" if self.position_bias_rate is None else f"; orders disagreed on {self.position_bias_rate:.0%}"
        return (
            f"judge check: right on {self.correct} of {self.items} comparisons of {where}: {self.accuracy:.0%} "
            f"(95% interval {self.low:.0%}-{self.high:.0%}){bias}"
        )

    def warnings(self) -> list[str]:
        """What is wrong with the judge, one sentence each (empty when nothing is)."""
        out = []
        if self.at_chance:
            out.append(
                f"the judge is NOT shown to be better than a coin: its 95% interval ({self.low:.0%}-{self.high:.0%}) "
                "reaches down to chance (50%); its labels may be noise"
            )
        if self.guessing:
            out.append(
                f"the judge's two orders disagreed on {self.position_bias_rate:.0%} of comparisons: it names the "
                "same slot whatever the content, i.e. it is guessing, whatever its accuracy says"
            )
        return out


class LabelManifest(Record):
    """Who labelled a run and how; labels are resumed only under the same manifest."""

    schema_version: int = SCHEMA_VERSION
    judge: str = Field(description="The judge model as given (default, a folder, a hub id); the first of a panel.")
    panel: list[str] = Field(
        default_factory=list, description="Several judges: every judge's model as given, the first being `judge`."
    )
    settings: JudgeSettings
    constitution: ConstitutionRef
    check: JudgeCheck | None = Field(
        default=None, description="The judge on a labelled calibration set before labelling (None: not checked)."
    )

    def differences(self, other: LabelManifest) -> list[str]:
        """Human-readable fields in which ``other`` differs from this manifest."""
        mine, theirs = self.model_dump(), other.model_dump()
        out = []
        for key in ("judge", "panel", "constitution"):
            if mine[key] != theirs[key]:
                out.append(f"{key}: {_short(mine[key])} (in the folder) vs {_short(theirs[key])} (now)")
        for key, value in mine["settings"].items():
            if theirs["settings"].get(key) != value:
                out.append(f"judge {key}: {value} (in the folder) vs {theirs['settings'].get(key)} (now)")
        return out


def _short(value: Any) -> str:
    if isinstance(value, dict) and "hash" in value:
        return f"{value['id']} {value['hash'][:12]}"
    return str(value)
