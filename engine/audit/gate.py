"""The judge gate: measure the judge on a labelled calibration set before it labels a run.

``cai generate`` and ``cai label`` call :func:`check_judge` (``--judge-check
builtin|FILE|none``) and record the resulting
:class:`~engine.records.labels.JudgeCheck` in ``labels.json`` and the dataset
card; :func:`enforce` refuses a judge below ``--require-judge-accuracy``.
A resumed run reuses the check in its ``labels.json`` when the judge, its
settings and the calibration items are the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from constitution import Constitution
from engine.audit.accuracy import OURS, comparison_principles, evaluate_judge
from engine.audit.comparisons import LabelledComparison
from engine.audit.judges import load_audit_items, sample_items
from engine.errors import GATE, UserError
from engine.judge.panel import PairJudge
from engine.judge.store import LabelStore
from engine.records.labels import JudgeCheck

BUILTIN_CHECK_ITEMS = 16
"""Comparisons the builtin check judges: sampled once (the same every run), spread over the categories."""
BUILTIN_CHECK_MAX_CHARS = 1000
"""The builtin check samples comparisons of at most this many characters (conversation and both responses):
the check runs before every labelling, so it is kept to seconds on the embedded model; the long
multi-turn comparisons are left to ``cai judge-eval`` (and to ``--judge-check-limit``, which samples all)."""
CHECK_SEED = 0
"""The builtin check's sample does not follow a run's --seed: every run is checked on the same items."""


def check_items(source: str, limit: int | None = None) -> list[LabelledComparison]:
    """The comparisons a check judges: ``builtin`` (a fixed sample, see :data:`BUILTIN_CHECK_ITEMS`) or a file's.

    Args:
        source: ``builtin`` or a JSONL file of labelled comparisons.
        limit: Judge this many, sampled over the categories (default: every one of a file).

    Raises:
        JudgeDataError: The file cannot be read or gives no comparison for our protocol.
    """
    if limit is None and source == "builtin":
        short = [c for c in load_audit_items(source, OURS).comparisons if _size(c) <= BUILTIN_CHECK_MAX_CHARS]
        return sample_items(short, BUILTIN_CHECK_ITEMS, CHECK_SEED)
    return list(load_audit_items(source, OURS, limit=limit, seed=CHECK_SEED).comparisons)


def _size(c: LabelledComparison) -> int:
    return len(c.response_a) + len(c.response_b) + sum(len(m["content"]) for m in c.conversation)


def items_hash(items: Sequence[LabelledComparison]) -> str:
    """sha256 of what the check judges (ids, conversations, responses, labels, principles)."""
    digest = hashlib.sha256()
    for c in items:
        line = [c.id, c.conversation, c.response_a, c.response_b, c.better, c.principle]
        digest.update(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def check_judge(
    judge: PairJudge, constitution: Constitution, source: str, items: Sequence[LabelledComparison]
) -> JudgeCheck:
    """Judge the calibration comparisons (our protocol, the run's judge settings) and sum up the result.

    A comparison whose principle the constitution lacks is judged under sampled principles instead.
    """
    principles = comparison_principles(
        items, constitution, judge.settings.principles, judge.settings.seed, strict=False
    )
    result = evaluate_judge(judge, items, principles, file=source)
    return JudgeCheck(
        source=source,
        items=result.n,
        correct=result.correct,
        accuracy=result.accuracy,
        low=result.low,
        high=result.high,
        position_bias_rate=result.position_bias_rate,
        items_hash=items_hash(items),
        seconds=result.seconds,
    )


def enforce(check: JudgeCheck, required: float | None) -> None:
    """Refuse to label with a judge whose checked accuracy is below ``required``.

    Raises:
        UserError: The accuracy is below ``required`` (exit code 3, nothing labelled).
    """
    if required is not None and check.accuracy < required:
        raise UserError(
            f"{check.summary()}; --require-judge-accuracy {required:g} refuses to label with it. "
            "Use a stronger --judge-model, or lower the requirement.",
            exit_code=GATE,
        )


def warning_block(check: JudgeCheck) -> str | None:
    """The check's warnings as a block that cannot be missed in a terminal or a log (None: nothing to warn)."""
    found = check.warnings()
    if not found:
        return None
    bar = "!" * 78
    lines = [bar, "!! WARNING: " + check.summary()]
    lines += [f"!! - {w}" for w in found]
    if check.in_house:
        lines.append("!! (the builtin set is this project's own, and small: measure the judge with cai judge-eval)")
    lines += ["!! Use a stronger --judge-model before training on these labels.", bar]
    return "\n".join(lines)


def gate(
    labels: LabelStore,
    judge: PairJudge,
    constitution: Constitution,
    source: str,
    items: Sequence[LabelledComparison],
    required: float | None,
    say: Callable[[str], None],
) -> JudgeCheck:
    """Check the judge before it labels into ``labels`` (or reuse the folder's check), say how it did, and enforce.

    The check goes into the store's manifest, so ``labels.json`` records it.

    Raises:
        UserError: The judge's accuracy is below ``required`` (nothing is labelled).
    """
    digest = items_hash(items)
    before = labels.existing()
    reuse = (
        before is not None
        and not before.differences(labels.manifest)
        and before.check is not None
        and before.check.source == source
        and before.check.items_hash == digest
    )
    check = before.check if reuse and before is not None and before.check is not None else None
    if check is None:
        check = check_judge(judge, constitution, source, items)
    say(check.summary() + (" (checked earlier, in labels.json)" if reuse else ""))
    block = warning_block(check)
    if block is not None:
        say(block)
    enforce(check, required)
    labels.manifest = labels.manifest.model_copy(update={"check": check})
    return check
