"""Decoding steps of grouped-query models on the CPU through one SDPA path, padding or none.

Why
    A grouped-query model (SmolLM2: 9 query heads on 3 key/value heads) has
    two paths through transformers' ``sdpa`` attention for a one-token
    decoding step. With a padding mask, the query heads are folded onto their
    key/value heads (``pack_gqa``); with none (a batch whose rows all have
    the same length, a batch of one row), torch's ``enable_gqa`` is asked
    instead. On a CPU the second is much slower: measured on the embedded
    model (bf16, 2-core AMD EPYC with AVX512-BF16, torch 2.13, transformers
    5.25), a decoding step over 512 cached tokens took 133 ms vs 53 ms at
    batch 16 and 31.5 ms vs 25.2 ms at batch 1. Prompt passes (more than one
    query token) are not affected.

What
    :data:`NAME` is ``sdpa`` with one change: a decoding step of a
    grouped-query layer with no mask gets an all-true one, so it takes the
    folded path; the mask function is ``sdpa``'s. Same arithmetic as the
    padded path, which every padded batch already takes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

__all__ = ["NAME", "use_packed_decoding"]

NAME = "sdpa_packed_decoding"
"""The attention implementation's name in transformers' registries."""


def _attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if attention_mask is None and query.shape[2] == 1 and getattr(module, "num_key_value_groups", 1) > 1:
        attention_mask = torch.ones((query.shape[0], 1, 1, key.shape[2]), dtype=torch.bool, device=query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(NAME, _attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_packed_decoding(model: PreTrainedModel) -> None:
    """Switch a model that runs ``sdpa`` on the CPU to :data:`NAME` (its config then names the one it runs)."""
    if model.device.type == "cpu" and getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(NAME)
