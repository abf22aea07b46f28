"""The one small interface every model backend implements, and what the backends share.

Everything above this module (the critique loop, the judge, the evaluator) talks
to models only through :class:`Backend`: ``generate`` for a batch of chat
conversations and ``score`` for the log-probabilities of option strings. A new
backend (an inference server, an HTTP API) implements these two methods and
``describe``; nothing else changes.

The backends also share :class:`BackendError` (a model that cannot be loaded or
used), :func:`first_line` (short messages from a library's exception) and
:func:`locate_model` (checking a model folder or hub id before a loader gets
it). The registry that picks a backend by name is :mod:`engine.backends`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import UserError

Chat = list[dict[str, str]]
"""A conversation: ``[{"role": "user", "content": "..."}, ...]``."""


class SamplingParams(BaseModel):
    """How to sample a completion. Recorded with every output row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=256, ge=1, description="Most tokens to generate per completion.")
    temperature: float = Field(default=0.7, ge=0, description="0 means greedy decoding.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(default=0, description="Seed of the sampler for this call.")
    stop: tuple[str, ...] = Field(default=(), description="Strings that end a completion (not included in it).")


@dataclass(frozen=True)
class Completion:
    """One generated reply."""

    text: str
    """The reply, with any stop string and what followed it removed."""
    tokens: int
    """How many new tokens were generated (for throughput figures)."""


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probabilities of each option as the start of the assistant's reply to ``chat``."""

    chat: Chat
    options: tuple[str, ...]


class Backend(ABC):
    """A language model that answers batches of chats."""

    name: str
    """Model name recorded in provenance (a path, a hub id, or ``default``)."""

    serves_concurrently: ClassVar[bool] = False
    """Requests are independent and served concurrently (a server's slots): ``generate`` may be called from
    several threads at once, one chat per call, at no cost against one batched call. The critique loop then
    pipelines rows (:mod:`engine.pipeline`) instead of running step by step; in-process backends, whose step
    is one batched forward pass, leave it False."""

    @abstractmethod
    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        """Generate one assistant reply per chat, in the order given.

        Backends batch internally (their own batch size, grouping requests of
        similar length); callers pass everything a step needs at once.
        """

    @abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """For each request, the log-probability of each option (same order)."""

    def describe(self) -> dict[str, Any]:
        """What to record about this backend in provenance (model, dtype, ...)."""
        return {"backend": type(self).__name__, "model": self.name}


class BackendError(UserError):
    """A model could not be loaded or used; the message says what to do."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for short error messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def locate_model(model: str) -> str:
    """Check a local model folder (or accept a hub id) and return what a loader should get.

    Args:
        model: A model folder (``save_pretrained`` or ``cai train`` output) or a hub id.

    Returns:
        The folder as a path string, or the hub id unchanged.

    Raises:
        BackendError: A file, a folder without ``config.json``, or a path that does not exist.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackendError(f"{model}: not a model folder (it is a file)")
        if not (path / "config.json").is_file():
            raise BackendError(
                f"{model}: this folder holds no model (no config.json); "
                "point at a folder written by save_pretrained or by `cai train`"
            )
        return str(path)
    if path.is_absolute() or model.startswith((".", "~")) or not _HUB_ID.match(model):
        raise BackendError(f"{model}: no such model folder")
    return model
