"""Which token prefixes of one call's prompts run only once, and the batches the prompts run in.

Why
    Most of a judge or critique prompt is the same for many requests: the
    chat template's system prompt, the template's instructions, the principle
    and its examples, and (for the judge) the whole conversation of one
    trajectory. Run once, a shared prefix's keys and values serve every prompt
    that starts with it; only each prompt's own rest is computed per prompt.

Heads (:func:`shared_heads`)
    A prompt's *head* is the longest prefix it shares with another prompt of
    the same call (at least :data:`MIN_SHARED` tokens, and always short of its
    last token, whose logits are needed). Heads are found over the whole call,
    not per batch: a principle's examples are computed once however many
    batches its prompts land in. Heads nest (the system prompt is a prefix of
    every principle's head), so the backend runs the heads the same way, with
    their own shared heads, down to :data:`MAX_DEPTH` levels.

Batches (:func:`plan_batches`)
    To score, prompts are sorted by the length of their own part (after the
    head) and cut into batches of at most ``batch_size`` rows and
    ``max_tokens`` padded own tokens: the own tokens are what a batch
    computes, so that is what the budget bounds, and padding may add only
    a little to them (:data:`MAX_PADDING`). The key/value cache a batch
    holds (heads included) stays within :data:`CACHE_FACTOR` times the
    budget. To generate, batches are those of running every prompt whole
    (:func:`length_batches`), heads or not: each decoding step reads every
    row's whole cache, padded to the longest row, and on a CPU decoding is
    most of a generation. Measured on the embedded model (bf16, 2-core AMD
    EPYC), own-length batches made the critique and revision steps no faster
    than running every prompt whole, and wider batches sorted by whole
    length no faster than these.

Counting
    :func:`count` gives a batch's prompt tokens requested (each row's whole
    length) and computed (each row's own tokens; heads are counted where they
    run), as a :class:`~engine.records.run.PromptTokenCount`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.records.run import PromptTokenCount

__all__ = [
    "CACHE_FACTOR",
    "FREE_PADDING",
    "MAX_DEPTH",
    "MAX_PADDING",
    "MIN_SHARED",
    "NO_TOKENS",
    "Plan",
    "TokenMeter",
    "common_prefix",
    "count",
    "length_batches",
    "longest_known",
    "plan_batches",
    "shared_heads",
    "waves",
]

NO_TOKENS = PromptTokenCount(requested=0, computed=0)
B = TypeVar("B")

MIN_SHARED = 8
"""Fewest tokens worth sharing: a shorter common prefix is computed with each prompt."""

MAX_DEPTH = 3
"""Levels of heads within heads; deeper ones run whole."""

CACHE_FACTOR = 4
"""A batch's key/value cache, heads included, holds at most this many times the token budget."""

MAX_PADDING = 0.25
"""Padding a prompt pass that does not decode (scoring, heads) may add: this share of its real own tokens,
or :data:`FREE_PADDING` tokens if more.

Padding costs as much as a real token, and on a CPU rows cost per token
batched or not: measured on the embedded model (bf16, 2-core AMD EPYC), 0.6-0.9
ms per token in passes of 1 to 4 rows, while head passes of 9-10 rows padded to
3-5x their real tokens took 2.6-3.7 ms per real token."""

FREE_PADDING = 64
"""Padded tokens any pass may add: about what one more pass costs over its tokens (~40 ms on that CPU)."""


@dataclass(frozen=True)
class Plan:
    """One batch: its rows (indices into the requests) and, per row, the length of its head (0: none)."""

    rows: list[int]
    heads: list[int]

    @property
    def shares(self) -> bool:
        """Whether any row of the batch continues from a head."""
        return any(self.heads)


def count(plan: Plan, lengths: Sequence[int]) -> PromptTokenCount:
    """Prompt tokens of one batch whose rows have ``lengths`` (in ``plan.rows`` order): requested and computed."""
    return PromptTokenCount(requested=sum(lengths), computed=sum(lengths) - sum(plan.heads))


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


def shared_heads(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Per prompt: the length of the longest prefix it shares with another prompt (0 under :data:`MIN_SHARED`).

    Always short of the prompt's last token. In token order, a prompt's longest
    common prefix with any other is the one with a neighbour.
    """
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    links = [common_prefix(prompts[a], prompts[b]) for a, b in itertools.pairwise(order)]
    heads = [0] * len(prompts)
    for k, i in enumerate(order):
        shared = max((links[j] for j in (k - 1, k) if 0 <= j < len(links)), default=0)
        shared = min(shared, len(prompts[i]) - 1)
        heads[i] = shared if shared >= MIN_SHARED else 0
    return heads


def longest_known(known: Sequence[tuple[int, ...]], prompt: Sequence[int]) -> int:
    """The length of the longest of ``known`` (sorted tuples) that is a prefix of ``prompt`` short of its last token.

    0 when none is. In sorted order, the longest known prefix of ``p`` is the
    greatest key not above ``p`` when that key is a prefix of ``p``; otherwise
    it is a prefix of the part that key shares with ``p``, searched the same way.
    """
    target = tuple(prompt[: len(prompt) - 1])
    while target:
        at = bisect.bisect_right(known, target) - 1
        if at < 0:
            return 0
        key = known[at]
        if target[: len(key)] == key:
            return len(key)
        target = target[: common_prefix(key, target)]
    return 0


def waves(prompts: Sequence[Sequence[int]], heads: Sequence[int], max_head_tokens: int) -> list[list[int]]:
    """The prompts in groups whose distinct heads hold at most ``max_head_tokens`` tokens together.

    The heads of one group are kept in memory while its prompts run; a head
    larger than the limit still gets a group of its own. One group when all fit.
    """
    distinct = {tuple(p[:h]) for p, h in zip(prompts, heads, strict=True) if h}
    if sum(map(len, distinct)) <= max_head_tokens:
        return [list(range(len(prompts)))]
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i][: heads[i]]))
    groups: list[list[int]] = [[]]
    held: set[tuple[int, ...]] = set()
    held_tokens = 0
    for i in order:
        head = tuple(prompts[i][: heads[i]])
        if head and head not in held:
            if held and held_tokens + len(head) > max_head_tokens:
                groups.append([])
                held, held_tokens = set(), 0
            held.add(head)
            held_tokens += len(head)
        groups[-1].append(i)
    return groups


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens.

    The token budget keeps long prompts (critique prompts with few-shot
    examples run to hundreds of tokens) in small batches: their cost is the
    prompt's forward pass, which batching does not speed up but padding and
    large attention matrices slow down, while short prompts still batch wide.
    A prompt longer than the budget goes alone.
    """
    return _cut(lengths, lengths, batch_size, max_tokens, max_tokens)


def plan_batches(
    lengths: Sequence[int], heads: Sequence[int], batch_size: int, max_tokens: int, *, decoding: bool = False
) -> Iterator[Plan]:
    """Batches within the limits (module docstring), with their heads: by own length (``lengths`` less
    ``heads``), or for ``decoding`` exactly those of :func:`length_batches`, as if nothing were shared."""
    if decoding:
        for rows in length_batches(lengths, batch_size, max_tokens):
            yield Plan(rows, [heads[i] for i in rows])
        return
    own = [n - h for n, h in zip(lengths, heads, strict=True)]
    cache_limit = max_tokens * (CACHE_FACTOR if any(heads) else 1)
    for rows in _cut(own, lengths, batch_size, max_tokens, cache_limit, bound_padding=True):
        yield Plan(rows, [heads[i] for i in rows])


def _cut(
    own: Sequence[int],
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int,
    cache_limit: int,
    bound_padding: bool = False,
) -> Iterator[list[int]]:
    """Indices by ``own`` length in batches: rows, padded own tokens and padded whole ``lengths`` within limits,
    and with ``bound_padding`` the padding of own tokens too (:data:`MAX_PADDING`)."""
    batch: list[int] = []
    widest = longest = real = 0
    for i in sorted(range(len(own)), key=lambda i: own[i]):
        wide, long = max(widest, own[i]), max(longest, lengths[i])
        rows = len(batch) + 1
        if batch and (
            rows > batch_size
            or rows * wide > max_tokens
            or rows * long > cache_limit
            or (bound_padding and rows * wide - real - own[i] > max(MAX_PADDING * (real + own[i]), FREE_PADDING))
        ):
            yield batch
            batch, wide, long, real = [], own[i], lengths[i], 0
        batch.append(i)
        widest, longest, real = wide, long, real + own[i]
    if batch:
        yield batch
