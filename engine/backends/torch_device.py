"""Where a torch model runs and in what precision: device and dtype from names, and the KV-cache token budget.

``auto`` picks the hardware's fast path: CUDA when there is one, and bf16 where
it is computed natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX-BF16),
else fp32. Shared by the transformers backend, preference models and training.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from engine.backends.base import BackendError

__all__ = [
    "CPU_BATCH_TOKENS",
    "CPU_DECODE_TOKENS",
    "DTYPES",
    "cpu_has_fast_bf16",
    "kv_token_budget",
    "resolve_device",
    "resolve_dtype",
]

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise BackendError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16), so bf16 can beat fp32.

    On CPUs without it (e.g. AVX2 only) torch runs bf16 matmuls on a slow
    fallback path: on the 2-core AVX2 machine this was written on, a bf16 GEMM
    ran ~50x slower than fp32 and bf16 generation ~4x slower.
    """
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:  # older torch
        with contextlib.suppress(AttributeError, RuntimeError):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return False
    caps = get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
        return torch.float32
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise BackendError(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32") from None


CPU_BATCH_TOKENS = 4096
"""Most padded prompt tokens in one forward pass over prompts on the CPU (``HFBackend.max_batch_tokens``)."""

CPU_DECODE_TOKENS = 32768
"""Most padded tokens in one decoding batch on the CPU (``HFBackend.max_decode_tokens``): its rows are limited
by the batch size first; the keys and values of 32768 tokens of the embedded model take 0.75 GiB in bf16."""


def kv_token_budget(config: Any, dtype: torch.dtype, free_bytes: int, share: float = 0.25) -> int:
    """Tokens whose KV cache fits in ``share`` of ``free_bytes`` (at least 4096, at most 2**20)."""
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0))
    per_token = 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
    if per_token <= 0:
        return CPU_BATCH_TOKENS
    return max(CPU_BATCH_TOKENS, min(2**20, int(free_bytes * share) // per_token))
