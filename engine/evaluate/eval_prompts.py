"""Every prompt ``cai eval`` asks each model: red-team, benign, jailbreak-wrapped and counterfactual."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.config import EvalConfig
from engine.evaluate.answers import PromptSetName
from engine.evaluate.probes.counterfactual import counterfactual_prompts, load_counterfactual
from engine.evaluate.probes.jailbreaks import jailbreak_prompts
from engine.rundir import RunDirError
from engine.sources import PromptItem, PromptSetError, load_prompts, sample_ids

__all__ = ["EvalPrompt", "eval_prompts"]


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt to answer, with the set it belongs to and probe metadata."""

    item: PromptItem
    set: PromptSetName
    meta: Mapping[str, str | None] = field(default_factory=dict)


def eval_prompts(config: EvalConfig) -> list[EvalPrompt]:
    """Every prompt each model answers: red-team, benign, jailbreak-wrapped and counterfactual.

    ``limit`` takes the same seeded sample, spread over kinds and harm
    categories, that ``cai generate --limit`` takes; the red-team prompts
    wrapped in jailbreaks are such a sample of the red-team set too.

    Args:
        config: The evaluation's settings.

    Returns:
        The prompts: red-team, benign, jailbreak, counterfactual, in that order.

    Raises:
        PromptSetError: A prompt source is unreadable or malformed, or holds
            prompts of the wrong kind for its set.
        RunDirError: Two sets hold the same prompt id.
    """
    redteam = load_prompts(config.redteam)
    benign = load_prompts(config.benign)
    _check_kinds(config.redteam, "--redteam", redteam, wrong=("benign", "near_miss"), other="--benign")
    _check_kinds(config.benign, "--benign", benign, wrong=("harmful",), other="--redteam")
    if config.limit is not None:
        redteam, benign = _sample(redteam, config.limit, config.seed), _sample(benign, config.limit, config.seed)
    out = [EvalPrompt(item, "redteam") for item in redteam]
    out += [EvalPrompt(item, "benign") for item in benign]
    if config.jailbreaks:
        for jb in jailbreak_prompts(_sample(redteam, config.jailbreaks, config.seed)):
            out.append(EvalPrompt(jb.item, "jailbreak", {"source_id": jb.source_id, "wrapper": jb.wrapper_id}))
    if config.counterfactual:
        for cf in counterfactual_prompts(load_counterfactual()[: config.counterfactual]):
            meta = {"template": cf.template_id, "attribute": cf.attribute, "group": cf.group}
            out.append(EvalPrompt(cf.item, "counterfactual", meta))
    seen: dict[str, str] = {}
    sources = {"redteam": config.redteam, "benign": config.benign}
    for prompt in out:
        where = f"{prompt.set} ({sources[prompt.set]})" if prompt.set in sources else prompt.set
        if prompt.item.id in seen:
            raise RunDirError(
                f"prompt id {prompt.item.id!r} is in both the {seen[prompt.item.id]} and the {where} prompts; "
                "the evaluation sets must not share ids (give the prompts of one set other ids)"
            )
        seen[prompt.item.id] = where
    return out


def _sample(items: Sequence[PromptItem], limit: int, seed: int) -> list[PromptItem]:
    """What ``load_prompts(..., limit=limit, seed=seed)`` keeps of ``items``."""
    chosen = sample_ids(((item.id, item.kind, item.category) for item in items), limit, seed=seed)
    return [item for item in items if item.id in chosen]


def _check_kinds(source: str, flag: str, items: Sequence[PromptItem], *, wrong: tuple[str, ...], other: str) -> None:
    """Refuse a set whose prompts say they belong to the other set (they would be scored the wrong way)."""
    misplaced = [item for item in items if item.kind in wrong]
    if misplaced:
        first = misplaced[0]
        more = f" (and {len(misplaced) - 1} more)" if len(misplaced) > 1 else ""
        raise PromptSetError(
            f"prompt {first.id!r}{more} has kind {first.kind!r}, but {flag} prompts are scored as "
            f"{'harmful requests' if flag == '--redteam' else 'requests that must not be refused'}; "
            f"give such prompts to {other}",
            file=source,
        )
