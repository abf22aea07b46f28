"""One decoding path on the CPU for grouped-query models: the same tokens, and never torch's ``enable_gqa``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engine.backends.base import SamplingParams
from engine.backends.decode_attention import NAME
from tests.models import tiny_model_dir

CHATS = [
    [{"role": "user", "content": "Tell me about the sea."}],
    [{"role": "user", "content": "Tell me about the sky."}],  # the same length: a batch with no padding
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def test_the_backend_decodes_through_the_packed_path_with_the_same_tokens(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.backends.hf import HFBackend

    backend = HFBackend(str(tiny_dir), dtype="float32", device="cpu", batch_size=4, prefix_reuse=False)
    assert backend.describe()["attention"] == NAME
    assert backend.model.config.num_key_value_heads < backend.model.config.num_attention_heads  # grouped-query
    lengths = {len(p) for p in backend.encode([backend.render(c) for c in CHATS])}
    assert len(lengths) == 1  # no padding in the batch of both
    params = SamplingParams(temperature=0, max_new_tokens=8)
    calls: list[dict[str, Any]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        calls.append({"queries": query.shape[2], **kwargs})
        return sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    packed = [backend.generate(CHATS, params), backend.generate(CHATS[:1], params)]
    decoding = [c for c in calls if c["queries"] <= 2]  # one query token, or the 2 query heads of one packed
    assert decoding and not any(c.get("enable_gqa") for c in decoding)
    backend.model.set_attn_implementation("sdpa")
    calls.clear()
    plain = [backend.generate(CHATS, params), backend.generate(CHATS[:1], params)]
    assert any(c.get("enable_gqa") for c in calls if c["queries"] == 1)  # what the packed path steers around
    assert packed == plain
