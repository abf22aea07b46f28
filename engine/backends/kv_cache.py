"""Key/value caches for shared prefixes: one row's keys and values cut out of a batch, heads stacked into a batch.

A head's keys and values (:data:`HeadKV`) are kept without padding, one pair
of tensors per layer, shaped ``[kv_heads, length, head_dim]``. A batch's cache
is transformers' ``DynamicCache``, shaped ``[rows, kv_heads, columns, head_dim]``
per layer, whose attention mask says which columns hold a token.

Heads outlive the call that computed them in a :class:`HeadCache`: a
principle's instructions and examples head its critique prompts in every
round of a run, so they run once per run, not once per call.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from engine.backends.prefix import longest_known

__all__ = [
    "HeadCache",
    "HeadKV",
    "HeadStore",
    "cache_of",
    "row_kv",
    "stack_heads",
]

HeadKV = list[tuple[torch.Tensor, torch.Tensor]]
"""One prompt's keys and values, per layer, without padding."""

HeadStore = dict[tuple[int, ...], HeadKV]
"""The keys and values of the heads one call holds, by their token ids."""


class HeadCache:
    """Heads' keys and values kept from call to call, least recently used dropped past ``max_tokens`` tokens.

    Keyed by the heads' token ids, so it holds for one model with fixed weights:
    whoever changes the weights must :meth:`clear` it. A head longer than the
    limit is not kept.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0
        """Tokens of the heads held now."""
        self._kv: OrderedDict[tuple[int, ...], HeadKV] = OrderedDict()
        self._sorted: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self._kv)

    def longest(self, prompt: Sequence[int]) -> int:
        """The length of the longest held head that ``prompt`` starts with, short of its last token (0: none)."""
        return longest_known(self._sorted, prompt)

    def get(self, head: tuple[int, ...]) -> HeadKV | None:
        """The head's keys and values (None: not held), now the most recently used."""
        found = self._kv.get(head)
        if found is not None:
            self._kv.move_to_end(head)
        return found

    def put(self, head: tuple[int, ...], kv: HeadKV) -> None:
        """Hold ``kv`` as the keys and values of ``head``, dropping the least recently used past the limit."""
        if head in self._kv or len(head) > self.max_tokens:
            return
        while self._kv and self.tokens + len(head) > self.max_tokens:
            old, _ = self._kv.popitem(last=False)
            self._sorted.pop(bisect.bisect_left(self._sorted, old))
            self.tokens -= len(old)
        self._kv[head] = kv
        bisect.insort(self._sorted, head)
        self.tokens += len(head)

    def clear(self) -> None:
        """Drop every head."""
        self._kv.clear()
        self._sorted.clear()
        self.tokens = 0


def cache_of(out: Any) -> Any:
    """The key/value cache of a forward pass (``cache`` since transformers 5, ``past_key_values`` before)."""
    found = getattr(out, "cache", None)
    return found if found is not None else out.past_key_values


def row_kv(cache: Any, mask: torch.Tensor, row: int) -> HeadKV:
    """Row ``row``'s keys and values: the columns its ``mask`` row marks, copied out of the batch
    (indexing by a boolean mask copies)."""
    keep = mask[row].bool()
    return [(layer.keys[row][:, keep], layer.values[row][:, keep]) for layer in cache.layers]


def stack_heads(heads: Sequence[HeadKV | None], config: Any) -> tuple[Any, torch.Tensor]:
    """A batch's cache holding each row's head left-padded (None: the row has none), and its attention mask."""
    found = [h for h in heads if h is not None]
    if not found:
        raise ValueError("stack_heads needs at least one head")
    width = max(h[0][0].shape[1] for h in found)
    some = found[0][0][0]
    mask = torch.zeros((len(heads), width), dtype=torch.long, device=some.device)
    for b, head in enumerate(heads):
        if head is not None:
            mask[b, width - head[0][0].shape[1] :] = 1
    try:
        cache = DynamicCache(config=config)
    except TypeError:  # transformers before the cache took its config
        cache = DynamicCache()
    for layer in range(len(found[0])):
        keys_shape = (len(heads), some.shape[0], width, found[0][layer][0].shape[-1])
        values_shape = (len(heads), some.shape[0], width, found[0][layer][1].shape[-1])
        keys, values = some.new_zeros(keys_shape), some.new_zeros(values_shape)
        for b, head in enumerate(heads):
            if head is not None:
                k, v = head[layer]
                keys[b, :, width - k.shape[1] :] = k
                values[b, :, width - v.shape[1] :] = v
        cache.update(keys, values, layer)
    return cache, mask
