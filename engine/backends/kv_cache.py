"""Key/value caches for shared prefixes: one row's keys and values cut out of a batch, heads stacked into a batch.

A head's keys and values (:data:`HeadKV`) are kept without padding, one pair
of tensors per layer, shaped ``[kv_heads, length, head_dim]``. A batch's cache
is transformers' ``DynamicCache``, shaped ``[rows, kv_heads, columns, head_dim]``
per layer, whose attention mask says which columns hold a token; its layers
are :class:`RoomyLayer` (:func:`roomy_cache`), which write new columns into
room kept for them instead of concatenating.

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
from transformers.cache_utils import DynamicLayer

from engine.backends.prefix import longest_known

__all__ = [
    "HeadCache",
    "HeadKV",
    "HeadStore",
    "RoomyLayer",
    "cache_of",
    "roomy_cache",
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


class RoomyLayer(DynamicLayer):
    """transformers' ``DynamicLayer`` writing new columns into room kept after them, not concatenating.

    ``DynamicLayer.update`` concatenates, so every decoding step copies the
    whole cache, every layer. Measured on the embedded model (bf16, batch 16,
    512 cached tokens, 2-core AMD EPYC with AVX512-BF16, torch 2.13,
    transformers 5.25): those copies were 39% of a step's time, more than
    attention (26%) or the matrix products (26%). This layer keeps its keys
    and values in buffers with ``room`` columns to spare and returns views of
    the filled part; a buffer that runs out grows by ``room`` more plus what
    was asked. Whatever replaces ``keys`` from outside (transformers' crop,
    beam reordering, batch selection) is copied into fresh buffers at the next update.
    """

    def __init__(self, room: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._filled = 0
        self._handed: torch.Tensor | None = None
        """The keys last returned: anything else in ``keys`` was put there from outside."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.keys is not self._handed:  # the first update, or keys replaced from outside
            self._adopt()
        new = key_states.shape[-2]
        if self._buffers is None or self._filled + new > self._buffers[0].shape[-2]:
            self._grow(self._filled + new + self.room, key_states, value_states)
        if self._buffers is None:
            raise AssertionError("RoomyLayer._grow left no buffers")
        keys, values = self._buffers
        keys[..., self._filled : self._filled + new, :] = key_states
        values[..., self._filled : self._filled + new, :] = value_states
        self._filled += new
        self.keys, self.values = keys[..., : self._filled, :], values[..., : self._filled, :]
        self._handed = self.keys
        return self.keys, self.values

    def _adopt(self) -> None:
        """Take what ``keys`` and ``values`` hold now (nothing after a reset) as the filled columns, no buffer yet."""
        self._buffers = None
        self._filled = 0 if self.keys is None or self.keys.numel() == 0 else self.keys.shape[-2]

    def _grow(self, columns: int, like_keys: torch.Tensor, like_values: torch.Tensor) -> None:
        """New buffers of ``columns`` columns, shaped like ``like_keys`` and ``like_values`` otherwise,
        holding the filled columns."""
        keys = like_keys.new_empty((*like_keys.shape[:-2], columns, like_keys.shape[-1]))
        values = like_values.new_empty((*like_values.shape[:-2], columns, like_values.shape[-1]))
        if self._filled:
            if self.keys is None or self.values is None:
                raise AssertionError("RoomyLayer holds columns without keys")
            keys[..., : self._filled, :] = self.keys
            values[..., : self._filled, :] = self.values
        self._buffers = (keys, values)

    def reset(self) -> None:
        super().reset()
        self._buffers, self._filled, self._handed = None, 0, None


def roomy_cache(config: Any, room: int) -> Any:
    """An empty ``DynamicCache`` for ``config`` whose plain layers are :class:`RoomyLayer` with ``room`` columns
    to spare (sliding-window and other layer kinds are kept as transformers makes them)."""
    try:
        cache = DynamicCache(config=config)
    except TypeError:  # transformers before the cache took its config
        return DynamicCache()
    cache.layers = [RoomyLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def cache_of(out: Any) -> Any:
    """The key/value cache of a forward pass (``cache`` since transformers 5, ``past_key_values`` before)."""
    found = getattr(out, "cache", None)
    return found if found is not None else out.past_key_values


def row_kv(cache: Any, mask: torch.Tensor, row: int) -> HeadKV:
    """Row ``row``'s keys and values: the columns its ``mask`` row marks, copied out of the batch
    (indexing by a boolean mask copies)."""
    keep = mask[row].bool()
    return [(layer.keys[row][:, keep], layer.values[row][:, keep]) for layer in cache.layers]


def stack_heads(heads: Sequence[HeadKV | None], config: Any, room: int) -> tuple[Any, torch.Tensor]:
    """A batch's cache holding each row's head left-padded (None: the row has none), with ``room`` columns
    to spare (:func:`roomy_cache`), and its attention mask."""
    found = [h for h in heads if h is not None]
    if not found:
        raise ValueError("stack_heads needs at least one head")
    width = max(h[0][0].shape[1] for h in found)
    some = found[0][0][0]
    mask = torch.zeros((len(heads), width), dtype=torch.long, device=some.device)
    for b, head in enumerate(heads):
        if head is not None:
            mask[b, width - head[0][0].shape[1] :] = 1
    cache = roomy_cache(config, room)
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
