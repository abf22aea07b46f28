"""The rows of a run's dataset: a preference pair per trajectory (TRL's conversational format) and an SFT row.

A pair is the judge's chosen and rejected candidate with its soft label
(``chosen_prob``) and margin; without a judge, the final revision over the
first answer; a person's review decision, when there is one, wins over both
(``label_source`` says which: :data:`~engine.records.AI_JUDGE`, or
:data:`~engine.records.PREFERENCE_MODEL` when preference models alone judged it,
:data:`~engine.records.REVISION_ASSUMED_BETTER`, :data:`~engine.records.HUMAN`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.records.decisions import Decision
from engine.records.labels import AI_JUDGE, HUMAN, PREFERENCE_MODEL, REVISION_ASSUMED_BETTER, Label
from engine.records.trajectory import Trajectory

if TYPE_CHECKING:
    from datasets import Features


def preference_row(
    t: Trajectory, label: Label | None = None, decision: Decision | None = None
) -> dict[str, Any] | None:
    """The pair a trajectory gives, or None when it gives none.

    Without a label: final revision over initial answer, None when no round
    changed the answer. With the judge's label: its chosen and rejected
    candidates, None when the judge dropped the row (tie, low margin,
    unreadable) or had nothing to compare. A person's ``decision`` (one that
    :meth:`~engine.records.Decision.applies` to ``t``) overrides both: None
    for a dropped pair, else the person's order.
    """
    human_label, human_note = "", ""
    if decision is not None:
        texts = decision.pair_texts(t) if decision.action in ("accept", "flip") else None
        if texts is None:
            return None
        (chosen, rejected), source = texts, HUMAN
        chosen_from, rejected_from, prob, margin = decision.chosen_from, decision.rejected_from, 1.0, 1.0
        judge = label.judge_model if label is not None else ""
        judge_principles = list(label.principles) if label is not None else []
        human_label, human_note = decision.human_label, decision.note
    elif label is None:
        if not t.revised:
            return None
        chosen, rejected, source = t.final, t.initial, REVISION_ASSUMED_BETTER
        chosen_from = next((f"revision_{n}" for n in range(len(t.rounds), 0, -1) if t.rounds[n - 1].changed), "")
        rejected_from, prob, margin, judge, judge_principles = "initial", None, None, "", []
    else:
        texts = label.pair_texts(t)
        if texts is None or label.chosen_from is None or label.rejected_from is None:
            return None
        (chosen, rejected), source = texts, PREFERENCE_MODEL if label.by_preference_model else AI_JUDGE
        chosen_from, rejected_from = label.chosen_from, label.rejected_from
        prob, margin, judge = label.chosen_prob, label.margin, label.judge_model
        judge_principles = list(label.principles)
    return {
        "id": t.id,
        "prompt": t.prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "label_source": source,
        "chosen_prob": prob,
        "margin": margin,
        "chosen_from": chosen_from,
        "rejected_from": rejected_from,
        "judge_model": judge,
        "judge_principles": judge_principles,
        "category": t.category or "",
        "kind": t.kind or "",
        "principle_ids": [r.principle_id for r in t.rounds if r.changed],
        "rounds": len(t.rounds),
        "constitution_hash": t.constitution.hash,
        "policy_model": t.models["policy"].get("model", ""),
        "critic_model": t.models["critic"].get("model", ""),
        "source": t.source,
        "human_label": human_label,
        "human_note": human_note,
    }


def sft_row(t: Trajectory) -> dict[str, Any]:
    """A prompt with its final answer, as chat ``messages``."""
    return {
        "id": t.id,
        "messages": [*t.prompt, {"role": "assistant", "content": t.final}],
        "revised": t.revised,
        "category": t.category or "",
        "constitution_hash": t.constitution.hash,
    }


def features() -> dict[str, Features]:
    """The Arrow schema of each split."""
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return {
        "preferences": Features(
            {
                "id": Value("string"),
                "prompt": List(message),
                "chosen": List(message),
                "rejected": List(message),
                "label_source": Value("string"),
                "chosen_prob": Value("float64"),
                "margin": Value("float64"),
                "chosen_from": Value("string"),
                "rejected_from": Value("string"),
                "judge_model": Value("string"),
                "judge_principles": List(Value("string")),
                "category": Value("string"),
                "kind": Value("string"),
                "principle_ids": List(Value("string")),
                "rounds": Value("int32"),
                "constitution_hash": Value("string"),
                "policy_model": Value("string"),
                "critic_model": Value("string"),
                "source": Value("string"),
                "human_label": Value("string"),
                "human_note": Value("string"),
            }
        ),
        "sft": Features(
            {
                "id": Value("string"),
                "messages": List(message),
                "revised": Value("bool"),
                "category": Value("string"),
                "constitution_hash": Value("string"),
            }
        ),
    }
