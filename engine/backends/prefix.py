"""Batches of prompts for the transformers backend, and which token prefixes of each batch run only once.

Why
    Most of a judge or critique prompt is the same for many requests: the
    chat template's system prompt, the template's instructions, the principle
    and its examples, and (for the judge) the whole conversation of one
    trajectory. Run once, a shared prefix's keys and values serve every row
    that starts with it; only each row's own rest is computed per row.

A batch's plan (:class:`Plan`)
    The rows of a batch are split into *groups* of rows with a common prefix.
    Each group's prefix (its *head*) runs once, all heads of the batch in one
    left-padded pass; each row then continues from its group's cached head with
    its own tokens, left-padded after the head, so padding may sit inside a row
    (the attention mask and the positions skip it) and the last column is every
    row's last token. A head always leaves its rows at least one token of their
    own and holds at least one token.

Choosing batches and groups (:func:`plan_batches`)
    Two ways of cutting the requests into batches are costed in prompt tokens
    run, padding included: by length with no heads (the way without reuse:
    little padding), and in token order (prompts with long common prefixes are
    neighbours) with heads. Both make batches of up to ``batch_size`` rows
    within ``max_tokens`` padded tokens (counted as if nothing were shared, so
    memory stays bounded as before), so both make about as many forward passes
    and decoding steps. In a token-ordered batch the grouping is the cheapest
    of those that split the rows wherever neighbours share fewer than some
    number of tokens. The cheaper way overall is taken. Generation keeps the
    batches by length and shares heads only inside them (``keep_batches``):
    every batch decodes token by token, so on a CPU the number of batches and
    their width weigh more than the prompt tokens saved.

Counting
    :func:`count` gives a batch's prompt tokens requested (each row's whole
    length) and computed (each head once, plus each row's own tokens; padding
    not counted), as a :class:`~engine.records.run.PromptTokenCount`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.records.run import PromptTokenCount

__all__ = ["NO_TOKENS", "Plan", "TokenMeter", "common_prefix", "count", "length_batches", "plan_batches"]

NO_TOKENS = PromptTokenCount(requested=0, computed=0)
B = TypeVar("B")

PASS_COST = 32
"""Tokens a forward pass is worth on top of its tokens, in the costing: a plan with heads makes one pass more."""


@dataclass(frozen=True)
class Plan:
    """One batch: its rows (indices into the requests) and, per row, the length of the head it continues from.

    ``heads`` is empty when nothing is shared: the batch runs as one left-padded pass.
    """

    rows: list[int]
    heads: list[int]
    """Per head: its length in tokens; rows of one group share the first ``heads[g]`` tokens."""
    group: list[int]
    """Per row (same order as ``rows``): the index of its head in ``heads``."""

    def head_of(self, position: int) -> int:
        """Tokens the row at ``position`` of ``rows`` takes from its head (0 without heads)."""
        return self.heads[self.group[position]] if self.heads else 0


def count(plan: Plan, lengths: Sequence[int]) -> PromptTokenCount:
    """Prompt tokens of one batch whose rows have ``lengths`` (in ``plan.rows`` order): requested and computed."""
    own = sum(lengths) - sum(plan.head_of(k) for k in range(len(lengths)))
    return PromptTokenCount(requested=sum(lengths), computed=own + sum(plan.heads))


class TokenMeter:
    """The prompt tokens that the backends a run loads count (``prompt_tokens``), from when each was watched."""

    def __init__(self) -> None:
        self._start: dict[int, tuple[Any, PromptTokenCount]] = {}

    def watch(self, backend: B) -> B:
        """Start counting ``backend`` (once; a backend without a counter is left out) and return it."""
        found = getattr(backend, "prompt_tokens", None)
        if isinstance(found, PromptTokenCount) and id(backend) not in self._start:
            self._start[id(backend)] = (backend, found)
        return backend

    def used(self) -> PromptTokenCount | None:
        """What the watched backends counted since; None when none counts."""
        if not self._start:
            return None
        return sum((b.prompt_tokens - start for b, start in self._start.values()), NO_TOKENS)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens.

    The token budget keeps long prompts (critique prompts with few-shot
    examples run to hundreds of tokens) in small batches: their cost is the
    prompt's forward pass, which batching does not speed up but padding and
    large attention matrices slow down, while short prompts still batch wide.
    A prompt longer than the budget goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    yield from _cut(order, lengths, batch_size, max_tokens)


def _cut(order: Sequence[int], lengths: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    batch: list[int] = []
    widest = 0
    for i in order:
        wide = max(widest, lengths[i])
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * wide > max_tokens):
            yield batch
            batch, wide = [], lengths[i]
        batch.append(i)
        widest = wide
    if batch:
        yield batch


def plan_batches(
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    max_tokens: int,
    reuse: bool = True,
    *,
    keep_batches: bool = False,
) -> list[Plan]:
    """The batches to run ``prompts`` in, each with its heads (module docstring); ``reuse=False``: none shared.

    ``keep_batches``: the batches by length, as without reuse, with heads only inside them (for generating:
    each batch decodes step by step, so fewer, narrower batches matter more than more sharing).
    """
    lengths = [len(p) for p in prompts]
    plain = [Plan(batch, [], []) for batch in length_batches(lengths, batch_size, max_tokens)]
    if not reuse or len(prompts) < 2:
        return plain
    if keep_batches:
        return [_grouped(prompts, sorted(p.rows, key=lambda i: list(prompts[i]))) for p in plain]
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    shared = [_grouped(prompts, batch) for batch in _cut(order, lengths, batch_size, max_tokens)]
    if sum(_cost(p, prompts) for p in shared) < sum(_cost(p, prompts) for p in plain):
        return shared
    return plain


def _cost(plan: Plan, prompts: Sequence[Sequence[int]]) -> int:
    """Prompt tokens the plan runs, padding included, plus :data:`PASS_COST` per forward pass."""
    own = max(len(prompts[i]) - plan.head_of(k) for k, i in enumerate(plan.rows))
    if not plan.heads:
        return len(plan.rows) * own + PASS_COST
    return len(plan.heads) * max(plan.heads) + len(plan.rows) * own + 2 * PASS_COST


def _grouped(prompts: Sequence[Sequence[int]], rows: list[int]) -> Plan:
    """The cheapest grouping of token-ordered ``rows``: split where neighbours share fewer than ``t`` tokens."""
    if len(rows) < 2 or min(len(prompts[i]) for i in rows) < 2:
        return Plan(rows, [], [])
    links = [common_prefix(prompts[a], prompts[b]) for a, b in itertools.pairwise(rows)]
    best = Plan(rows, [], [])
    for threshold in sorted(set(links)):
        if threshold < 1:
            continue
        candidate = _split(prompts, rows, links, threshold)
        if _cost(candidate, prompts) < _cost(best, prompts):
            best = candidate
    return best


def _split(prompts: Sequence[Sequence[int]], rows: list[int], links: list[int], threshold: int) -> Plan:
    """Groups of neighbours linked by at least ``threshold`` shared tokens; each group's head is what all its rows
    share (a lone row: what it shares with its closer neighbour), at least 1 token and short of every row's end."""
    starts = [0] + [k + 1 for k, link in enumerate(links) if link < threshold]
    ends = [*starts[1:], len(rows)]
    heads: list[int] = []
    group: list[int] = []
    for g, (start, end) in enumerate(zip(starts, ends, strict=True)):
        inner = links[start : end - 1]
        if inner:
            head = min(inner)
        else:  # a lone row
            around = [links[k] for k in (start - 1, start) if 0 <= k < len(links)]
            head = max(around, default=0)
        head = min(head, *(len(prompts[rows[k]]) - 1 for k in range(start, end)))
        heads.append(max(head, 1))
        group.extend([g] * (end - start))
    return Plan(rows, heads, group)
