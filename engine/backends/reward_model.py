"""A preference model (reward model): one scalar per response, from one forward pass.

``cai train rm`` writes one: a causal LM with a scalar head
(``AutoModelForSequenceClassification`` with one label), trained so that
``r(better) > r(worse)``. :class:`RewardModel` loads such a folder and scores
(conversation, response) items in batches. Each item is tokenized exactly as
TRL's reward trainer tokenized the training pairs: the conversation with the
response appended as the assistant's turn, through the tokenizer's chat
template, right-padded, the reward read at the last real token.

The model spec is ``rm:PATH`` (a folder or a hub id) wherever a judge or a
reward is taken (``--judge-model``, ``--reward-model``)::

    rm = load_reward_model("rm:models/rm")
    rm.score([(chat, "first answer"), (chat, "second answer")])  # [1.3, -0.4]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol

from engine.backends.base import BackendError, Chat, first_line, locate_model
from engine.backends.prefix import length_batches

PREFIX = "rm:"
"""Model specs naming a preference model start with this."""

Item = tuple[Chat, str]
"""A conversation (ending with the user's turn) and one response to it."""


class Scorer(Protocol):
    """What the engine needs of a preference model (:class:`RewardModel` is one; tests script others).

    Best-of-n picks answers with it, the judge turns two of its rewards into a
    preference, and RL rewards completions with it.
    """

    @property
    def name(self) -> str:
        """The name recorded with what it scored (``rm:PATH``)."""
        ...

    def score(self, items: Sequence[Item]) -> list[float]:
        """The reward of each (conversation, response), in order; higher is better."""
        ...


def is_reward_spec(spec: str) -> bool:
    """Whether a model spec names a preference model (``rm:PATH``)."""
    return spec.startswith(PREFIX)


class RewardModel:
    """A trained preference model over transformers (see the module docstring).

    Args:
        model: A model folder (``cai train rm`` output) or a hub id.
        name: Name recorded in provenance (default ``rm:MODEL``).
        batch_size: Most sequences one forward pass takes.
        dtype: ``auto`` (bf16 where the hardware computes it natively), or a dtype name.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.

    Raises:
        BackendError: No such folder, not a model with one scalar output, or a tokenizer without a chat template.
    """

    def __init__(
        self, model: str, *, name: str | None = None, batch_size: int = 16, dtype: str = "auto", device: str = "auto"
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from engine.backends.torch_device import resolve_device, resolve_dtype

        if batch_size < 1:
            raise BackendError(f"batch_size must be at least 1, not {batch_size}")
        self.model_ref = model
        self.name = name or PREFIX + model
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        source = locate_model(model)
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as exc:
            raise BackendError(f"{model}: cannot read the model's config: {first_line(exc)}") from None
        architectures = list(getattr(config, "architectures", None) or [])
        if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
            raise BackendError(
                f"{model}: not a preference model (architectures {', '.join(architectures) or 'none'}, "
                f"{config.num_labels} output(s)); train one with `cai train rm`, or drop the rm: prefix to use "
                "a language model as a judge"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForSequenceClassification.from_pretrained(source, dtype=self.dtype)
        except Exception as exc:
            raise BackendError(f"{model}: cannot load the preference model: {first_line(exc)}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"{model}: the tokenizer has no chat template; a preference model here scores chats")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device)
        self.model.eval()
        self._torch = torch

    def describe(self) -> dict[str, Any]:
        """What to record about this preference model in provenance."""
        return {
            "backend": "reward_model",
            "model": self.model_ref,
            "name": self.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }

    def encode(self, item: Item) -> list[int]:
        """The token ids of one (conversation, response), as TRL's reward trainer tokenizes a pair's side."""
        chat, response = item
        messages = [{"role": m["role"], "content": m["content"]} for m in chat]
        messages.append({"role": "assistant", "content": response})
        try:
            encoded = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        except Exception as exc:
            raise BackendError(f"{self.name}: the chat template rejected a conversation: {first_line(exc)}") from None
        ids: Any = encoded["input_ids"]  # type: ignore[call-overload,index]
        return [int(i) for i in ids]

    def score(self, items: Sequence[Item]) -> list[float]:
        """The reward of each response to its conversation (same order), in batches of similar length."""
        torch = self._torch
        ids = [self.encode(item) for item in items]
        rewards = [0.0] * len(items)
        pad = int(self.model.config.pad_token_id)
        with torch.inference_mode():
            for batch in length_batches([len(i) for i in ids], self.batch_size, max_tokens=sys.maxsize):
                width = max(len(ids[i]) for i in batch)
                tokens = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[row, : len(ids[i])] = 1
                out = self.model(input_ids=tokens.to(self.device), attention_mask=mask.to(self.device))
                values = out.logits.float().squeeze(-1).cpu().tolist()
                for i, value in zip(batch, values, strict=True):
                    rewards[i] = float(value)
        return rewards


def load_reward_model(spec: str, *, batch_size: int = 16, dtype: str = "auto", device: str = "auto") -> RewardModel:
    """The preference model an ``rm:PATH`` spec names.

    Raises:
        BackendError: Not an ``rm:`` spec, an empty path, or a model that cannot be loaded as a preference model.
    """
    if not is_reward_spec(spec):
        raise BackendError(f"{spec}: a preference model is named rm:PATH (a `cai train rm` output folder)")
    path = spec.removeprefix(PREFIX).strip()
    if not path:
        raise BackendError("rm: needs a path: rm:PATH, a folder written by `cai train rm`")
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            f"a preference model needs torch and transformers ({exc.name} is missing): "
            "pip install torch==2.13.0 transformers"
        ) from None
    try:
        locate_model(path)
    except BackendError as exc:  # say what rm: takes: "rm:/x: no such model folder; ..."
        why = str(exc).removeprefix(f"{path}: ")
        raise BackendError(f"{spec}: {why}; rm:PATH takes a folder written by `cai train rm` (or a hub id)") from None
    return RewardModel(path, name=spec, batch_size=batch_size, dtype=dtype, device=device)


__all__ = ["PREFIX", "Item", "RewardModel", "Scorer", "is_reward_spec", "load_reward_model"]
