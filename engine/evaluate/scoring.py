"""Scoring each answer as soon as it is written: refusal detector, harm classifier, pointwise judge.

The refusal detector scores every answer; the independent harm classifier
scores every answer to a harmful prompt (red-team, jailbreak, counterfactual);
the pointwise constitutional judge, when it is on, scores every answer. What
each said is kept in the answer's :class:`~engine.evaluate.answers.AnswerRecord`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.config import EvalConfig
from engine.evaluate.answers import AnswerRecord
from engine.evaluate.eval_prompts import EvalPrompt
from engine.evaluate.harm_classifier import (
    EncoderMissingError,
    HarmClassifier,
    evaluate_classifier,
    load_harm_classifier,
)
from engine.evaluate.pointwise import Answer, PointwiseJudge
from engine.evaluate.refusal import detect_refusal

__all__ = ["Scorers", "judged_answer", "load_classifier"]


class Scorers:
    """The per-answer scorers, loaded once: refusal detector, harm classifier, pointwise judge.

    Attributes:
        judge: The pointwise judge, or None when the judge is off.
        classifier: The harm classifier, or None when it is off or missing.
        seconds: Wall time spent in the judge and in the classifier.
    """

    def __init__(self, judge: PointwiseJudge | None, classifier: HarmClassifier | None) -> None:
        """Keep the scorers that run; None turns one off."""
        self.judge = judge
        self.classifier = classifier
        self.seconds = {"judge": 0.0, "classifier": 0.0}

    def score(self, prompts: Sequence[EvalPrompt], answers: Sequence[str], tokens: Sequence[int]) -> list[AnswerRecord]:
        """Records for one chunk of answers, every scorer applied.

        Args:
            prompts: The prompts answered.
            answers: One answer per prompt.
            tokens: Tokens generated per answer.

        Returns:
            One record per answer, in order.
        """
        verdicts = [detect_refusal(a, p.item.messages[-1]["content"]) for p, a in zip(prompts, answers, strict=True)]
        harmful = [p.set != "benign" for p in prompts]
        classifier: list[float | None] = [None] * len(prompts)
        if self.classifier is not None:
            start = time.perf_counter()
            picked = [i for i, h in enumerate(harmful) if h]
            if picked:
                probs = self.classifier.predict_proba(
                    [prompts[i].item.messages[-1]["content"] for i in picked], [answers[i] for i in picked]
                )
                for i, p in zip(picked, probs, strict=True):
                    classifier[i] = float(p)
            self.seconds["classifier"] += time.perf_counter() - start
        violation: list[float | None] = [None] * len(prompts)
        by_principle: list[dict[str, float]] = [{} for _ in prompts]
        if self.judge is not None:
            start = time.perf_counter()
            judged = self.judge.judge(
                [judged_answer(p, a) for p, a in zip(prompts, answers, strict=True)], benign=[not h for h in harmful]
            )
            for i, v in enumerate(judged):
                violation[i], by_principle[i] = v.p_violation, v.by_principle
            self.seconds["judge"] += time.perf_counter() - start
        out = []
        for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            item = prompt.item
            out.append(
                AnswerRecord(
                    id=item.id,
                    set=prompt.set,
                    category=item.category,
                    kind=item.kind,
                    messages=item.messages,
                    answer=answer,
                    tokens=tokens[i],
                    refusal=verdicts[i].label,
                    evasive=verdicts[i].evasive,
                    classifier_harm=classifier[i],
                    judge_violation=violation[i],
                    judge_principles=by_principle[i],
                    **{k: v for k, v in prompt.meta.items() if v is not None},
                )
            )
        return out


def judged_answer(prompt: EvalPrompt, text: str) -> Answer:
    """What the pointwise judge sees of one answer."""
    return Answer(prompt.item.id, prompt.item.messages, text, prompt.item.category)


def load_classifier(config: EvalConfig) -> tuple[HarmClassifier | None, dict[str, Any]]:
    """The harm classifier and what the report says about it (held-out quality, or why it did not run).

    Args:
        config: The evaluation's settings (``classifier`` turns it on).

    Returns:
        The classifier, or None when it is turned off or its encoder is not
        installed; and the report's ``harm_classifier`` entry.
    """
    if not config.classifier:
        return None, {"used": False, "why": "turned off (--no-classifier)"}
    try:
        clf = load_harm_classifier()
    except EncoderMissingError as exc:
        return None, {"used": False, "why": str(exc)}
    return clf, {"used": True, **evaluate_classifier(clf).to_dict()}
