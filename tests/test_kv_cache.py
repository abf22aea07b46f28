"""Caches with room for new columns: the same keys and values as transformers' concatenating layer, fewer copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from engine.backends import kv_cache
from engine.backends.base import SamplingParams
from engine.backends.kv_cache import RoomyLayer
from tests.models import tiny_model_dir

CHATS = [
    [{"role": "user", "content": "Tell me about the sea."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "word " * 30}],
    [{"role": "user", "content": "Tell me about the sky, and then about the sea, please."}],
]


def _columns(n: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3, n, 4), torch.randn(batch, 3, n, 5)  # values may be wider than keys


def _same(roomy: RoomyLayer, plain: DynamicLayer, got: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert plain.keys is not None and plain.values is not None
    assert torch.equal(got[0], plain.keys) and torch.equal(got[1], plain.values)
    assert roomy.get_seq_length() == plain.get_seq_length()


def test_a_roomy_layer_holds_what_the_concatenating_layer_holds_through_growth_crop_selection_and_reset() -> None:
    torch.manual_seed(0)
    roomy, plain = RoomyLayer(room=2), DynamicLayer()
    for n in [5, 1, 1, 1, 1, 3, 1]:  # past the room twice
        k, v = _columns(n)
        got = roomy.update(k, v)
        plain.update(k, v)
        _same(roomy, plain, got)
    for change in (lambda layer: layer.crop(-3), lambda layer: layer.batch_select_indices(torch.tensor([1]))):
        change(roomy)
        change(plain)
        k, v = _columns(1, batch=roomy.keys.shape[0])  # type: ignore[union-attr]
        got = roomy.update(k, v)
        plain.update(k, v)
        _same(roomy, plain, got)
    roomy.reset()
    plain.reset()
    k, v = _columns(2, batch=1)
    got = roomy.update(k, v)
    plain.update(k, v)
    _same(roomy, plain, got)


def test_steps_within_the_room_write_in_place() -> None:
    roomy = RoomyLayer(room=4)
    first, _ = roomy.update(*_columns(3))
    for _ in range(4):
        step, _ = roomy.update(*_columns(1))
        assert step.data_ptr() == first.data_ptr()  # the same buffer: nothing was copied to grow
    grown, _ = roomy.update(*_columns(1))
    assert grown.data_ptr() != first.data_ptr() and grown.shape[-2] == 8


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("reuse", [False, True])
def test_the_backend_decodes_into_roomy_layers_with_the_tokens_of_concatenating_ones(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, reuse: bool
) -> None:
    from engine.backends.hf import HFBackend

    backend = HFBackend(str(tiny_dir), dtype="float32", device="cpu", batch_size=4, prefix_reuse=reuse)
    params = SamplingParams(temperature=0, max_new_tokens=10)
    seen: list[Any] = []
    generate = backend.model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs[backend._cache_kwarg])
        return generate(*args, **kwargs)

    monkeypatch.setattr(backend.model, "generate", spy)
    roomy = backend.generate(CHATS, params)
    assert seen and all(isinstance(layer, RoomyLayer) for cache in seen for layer in cache.layers)
    backend.heads.clear()
    monkeypatch.setattr(kv_cache, "RoomyLayer", lambda room: DynamicLayer())
    seen.clear()
    plain = backend.generate(CHATS, params)
    assert seen and all(type(layer) is DynamicLayer for cache in seen for layer in cache.layers)
    assert roomy == plain
    assert len({c.text for c in plain}) > 1
