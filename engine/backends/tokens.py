"""What every backend that holds the model's tokenizer does the same way (``hf`` and ``vllm``).

Both render a chat with the tokenizer's chat template, tokenize a judge's
options as continuations of the rendered prompt, and cut a reply at its first
stop string, so that the same model gives the same prompts and the same
scores through either backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine.backends.base import BackendError, Chat, first_line


def render_chat(tokenizer: Any, chat: Chat, name: str) -> str:
    """The chat as the model sees it, ending with the assistant's generation prompt."""
    try:
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    except Exception as exc:
        raise BackendError(f"{name}: the chat template rejected a conversation: {first_line(exc)}") from None
    return str(text)


def continuation_ids(
    encode: Callable[[Sequence[str]], list[list[int]]], prompt: str, prompt_ids: Sequence[int], options: Sequence[str]
) -> list[list[int]]:
    """The token ids of each option as it continues ``prompt``.

    They are the tokens of ``prompt + option`` after the prompt's own tokens;
    where the tokenizer merges across the boundary (the prompt's tokens are
    not a prefix), the option is tokenized on its own instead. ``encode``
    maps a list of texts to their token ids (no special tokens added).
    """
    fulls = encode([prompt + o for o in options])
    alone = encode(options)
    n = len(prompt_ids)
    out: list[list[int]] = []
    for option, full, own in zip(options, fulls, alone, strict=True):
        if not option:
            out.append([])
        elif len(full) > n and full[:n] == list(prompt_ids):
            out.append(list(full[n:]))
        else:
            out.append(list(own))
    return out


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to its first stop string (the whole text when none occurs)."""
    cut = min((pos for s in stops if (pos := text.find(s)) >= 0), default=-1)
    return text[:cut] if cut >= 0 else text
