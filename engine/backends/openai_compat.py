"""A backend for any OpenAI-compatible chat-completions server: vLLM, TGI, llama.cpp's llama-server, hosted APIs.

Model spec
    ``openai:NAME`` names the model as the server knows it; the server is the
    ``base_url`` given to :func:`~engine.backends.load_backend` (``--base-url``
    on the CLI), else ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
    ``openai:NAME@URL`` carries the server in the spec itself, e.g.
    ``openai:qwen2.5-7b@http://127.0.0.1:8000/v1``. The spec is the model's name
    in a run's manifest: with ``--base-url`` a server that moved to another
    address can still resume the run; with ``@URL`` the address is part of
    the name and a rerun must use the same one. The API key is
    ``$CAI_API_KEY``, else ``$OPENAI_API_KEY`` (none: no ``Authorization``
    header, as local servers want). It is sent as a bearer token and never
    recorded or printed.

Requests in flight and retries
    Every chat of a ``generate`` or ``score`` call is its own request; at most
    ``max_concurrency`` are in flight at once (``load_backend`` passes its
    ``batch_size``, i.e. ``--batch-size``: the server batches the requests
    in flight the way the ``hf`` backend batches a forward pass). Results come
    back in the order of the chats. Timeouts, dropped connections, 408/425/429
    and 5xx replies and replies that are not a chat completion are retried
    with backoff; the first request that fails for good ends the call with a
    :class:`~engine.backends.base.BackendError` naming the URL, what failed
    and the number of tries. Rows finished before the failure are on disk, so
    rerunning the same command resumes. The HTTP side is
    :mod:`engine.backends.openai_transport`. The backend is thread-safe and
    :attr:`~engine.backends.base.Backend.serves_concurrently`, so ``cai generate``
    pipelines rows through it (:mod:`engine.pipeline`), one chat per call.

Sampling
    ``max_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop`` go to the
    server (which ones it honours is up to the server; vLLM and llama-server
    honour all five). Every request carries the same ``seed``, so with a
    server that honours it a reply depends on its own conversation only, not
    on what else was in flight. Stop strings are also cut on this side, so a
    reply never contains one. ``Completion.tokens`` is the server's
    ``usage.completion_tokens`` (a word count when the server gives no usage).

Scoring
    A chat API cannot score a given continuation, so ``score`` asks for a
    short greedy completion with ``logprobs`` and ``top_logprobs`` and reads
    the options' log-probabilities off it (an approximation, unlike the ``hf``
    backend's exact sums: :mod:`engine.backends.openai_scoring` says how).
    A server that returns no log-probabilities is an error, unless
    ``score_mode="parse"`` (``CAI_OPENAI_SCORE=parse``): then each option
    scores 0 if a short greedy reply starts with it and -inf if not (NaN for
    all when it starts with none), a hard label per order.

Settings from the environment (kept out of the spec, which names the model in a run's manifest)
    ``CAI_OPENAI_TIMEOUT`` (seconds per request, default 120),
    ``CAI_OPENAI_MAX_RETRIES`` (default 5), ``CAI_OPENAI_BACKOFF`` (seconds,
    default 0.5), ``CAI_OPENAI_SCORE`` (``logprobs`` or ``parse``). Before a
    run starts, ``GET /models`` checks that the server answers and takes the
    key (a server without that route is fine).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from engine.backends.base import Backend, BackendError, Chat, Completion, SamplingParams, ScoreRequest
from engine.backends.openai_scoring import TokenLogprobs, common_prefix, option_logprobs, verdict_logprobs
from engine.backends.openai_transport import KEY_VARIABLES, BadReply, Transport, snippet

if TYPE_CHECKING:
    import httpx

ENVIRONMENT = (
    *KEY_VARIABLES,
    "OPENAI_BASE_URL",
    "CAI_OPENAI_TIMEOUT",
    "CAI_OPENAI_MAX_RETRIES",
    "CAI_OPENAI_BACKOFF",
    "CAI_OPENAI_SCORE",
)
"""Every environment variable this backend reads (tests clear them)."""

ScoreMode = Literal["logprobs", "parse"]
_R = TypeVar("_R")


# ---------------------------------------------------------------- spec and settings


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``openai:NAME`` or ``openai:NAME@URL`` as (NAME, URL or None).

    Raises:
        BackendError: No model name.
    """
    body = spec.removeprefix("openai:")
    parts = re.split(r"@(?=[A-Za-z][A-Za-z0-9+.-]*://)", body, maxsplit=1)
    name = parts[0].strip()
    url = parts[1].strip() if len(parts) > 1 else ""
    if not name:
        raise BackendError(
            f"{spec}: no model name; use openai:NAME with --base-url URL, or openai:NAME@URL "
            "(e.g. openai:qwen2.5-7b@http://127.0.0.1:8000/v1)"
        )
    return name, url or None


def _env_number(variable: str, default: float, *, integer: bool = False, minimum: float = 0) -> float:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise BackendError(f"${variable}={raw!r}: must be {kind}") from None
    if not value >= minimum or math.isinf(value):
        raise BackendError(f"${variable}={raw!r}: must be at least {minimum:g}")
    return value


def from_spec(spec: str, *, base_url: str | None = None, max_concurrency: int = 8) -> OpenAIBackend:
    """The backend an ``openai:`` spec names, with settings from the arguments and the environment."""
    name, spec_url = parse_spec(spec)
    mode = os.environ.get("CAI_OPENAI_SCORE", "").strip() or "logprobs"
    if mode not in ("logprobs", "parse"):
        raise BackendError(f"$CAI_OPENAI_SCORE={mode!r}: use logprobs or parse")
    return OpenAIBackend(
        name,
        base_url=spec_url or base_url,
        max_concurrency=max_concurrency,
        timeout=_env_number("CAI_OPENAI_TIMEOUT", 120.0, minimum=0.001),
        max_retries=int(_env_number("CAI_OPENAI_MAX_RETRIES", 5, integer=True)),
        backoff=_env_number("CAI_OPENAI_BACKOFF", 0.5),
        score_mode="parse" if mode == "parse" else "logprobs",
    )


# ---------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _Reply:
    text: str
    tokens: int
    logprobs: list[TokenLogprobs] | None


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible server, many requests in flight, with retries.

    Args:
        model: The model's name on the server.
        base_url: The API root (ending in ``/v1`` for most servers); default
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        api_key: Bearer token; default ``$CAI_API_KEY``, else ``$OPENAI_API_KEY``, else none.
        max_concurrency: Most requests in flight at once.
        timeout: Seconds to wait for a reply (per try).
        connect_timeout: Seconds to wait for a connection (per try).
        max_retries: Tries after the first before a request fails for good.
        backoff: First wait between tries, in seconds (doubled each time, jittered).
        max_backoff: Longest wait between tries, ``Retry-After`` included.
        top_logprobs: Alternatives per token asked for when scoring (OpenAI allows at most 20).
        max_score_tokens: Most tokens generated to score one request.
        score_mode: ``logprobs`` (needs a server that returns them) or ``parse`` (read a generated verdict).
        check: Ask the server for its models first, so an unreachable server or a refused key fails now.

    Raises:
        BackendError: httpx is missing, a setting is out of range, or (with
            ``check``) the server cannot be reached or refuses the key.
    """

    serves_concurrently = True
    """Every chat is its own request to the server, so the critique loop pipelines rows through it."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        top_logprobs: int = 20,
        max_score_tokens: int = 512,
        score_mode: ScoreMode = "logprobs",
        check: bool = True,
    ) -> None:
        self._transport = Transport(
            model,
            base_url=base_url,
            api_key=api_key,
            max_concurrency=max_concurrency,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = self._transport.base_url
        """The API root without any user:password part (what messages and provenance show)."""
        self.max_concurrency = max_concurrency
        self.top_logprobs = top_logprobs
        self.max_score_tokens = max_score_tokens
        self.score_mode: ScoreMode = score_mode
        if check:
            self._transport.check()

    @property
    def served(self) -> list[str] | None:
        """Model ids the server listed (when ``check`` asked), for messages about an unknown model."""
        return self._transport.served

    # ------------------------------------------------------------ interface

    def describe(self) -> dict[str, Any]:
        return {
            "backend": type(self).__name__,
            "model": self.name,
            "base_url": self.base_url,
            "max_concurrency": self.max_concurrency,
            "score": self.score_mode,
        }

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        payload: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        replies = self._chat_completions([self._payload(chat, **payload) for chat in chats], _parse_chat)
        return [Completion(text=_cut(reply.text, params.stop), tokens=reply.tokens) for reply in replies]

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        if self.score_mode == "parse":
            payloads = [
                self._payload(r.chat, max_tokens=self._score_tokens(r.options, whole=True), temperature=0, seed=0)
                for r in requests
            ]
            replies = self._chat_completions(payloads, _parse_chat)
            return [verdict_logprobs(r.options, reply.text) for r, reply in zip(requests, replies, strict=True)]
        payloads = [
            self._payload(
                r.chat,
                max_tokens=self._score_tokens(r.options, whole=False),
                temperature=0,
                seed=0,
                logprobs=True,
                top_logprobs=self.top_logprobs,
            )
            for r in requests
        ]
        replies = self._chat_completions(payloads, self._parse_scored)
        out = []
        for request, reply in zip(requests, replies, strict=True):
            assert reply.logprobs is not None
            out.append(option_logprobs(request.options, reply.logprobs))
        return out

    def close(self) -> None:
        """Close the connections (the backend cannot be used afterwards)."""
        self._transport.close()

    # ------------------------------------------------------------ requests

    def _chat_completions(self, payloads: Sequence[dict[str, Any]], parse: Callable[[httpx.Response], _R]) -> list[_R]:
        return self._transport.post_all("chat/completions", payloads, parse)

    def _payload(self, chat: Chat, **fields: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": list(chat), "n": 1, **fields}

    def _score_tokens(self, options: Sequence[str], *, whole: bool) -> int:
        """Enough tokens to pass the options' shared prefix (a token is at least one byte), or all of the longest."""
        encoded = [o.encode() for o in options]
        needed = max(map(len, encoded), default=0) if whole else len(common_prefix(encoded))
        return max(1, min(needed + 1, self.max_score_tokens))

    def _parse_scored(self, response: httpx.Response) -> _Reply:
        reply = _parse_chat(response)
        if reply.logprobs is None:
            raise BackendError(
                f"{self.base_url}: the server returned no log-probabilities for {self.model} "
                "(the judge scores its options with them). Use a server that returns logprobs/top_logprobs "
                "(vLLM, llama.cpp's llama-server, OpenAI), or set CAI_OPENAI_SCORE=parse to read a written "
                "verdict instead (a hard 0/1 label per order, not a probability)."
            )
        return reply


# ---------------------------------------------------------------- replies


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise BadReply(f"the reply is not JSON: {snippet(response.text)}") from None


def _token_bytes(entry: Mapping[str, Any]) -> bytes:
    raw = entry.get("bytes")
    if isinstance(raw, list) and raw and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    token = entry["token"]
    if not isinstance(token, str):
        raise TypeError("token is not a string")
    return token.encode()


def _logprob(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("logprob is not a number")
    return float(value)


def _parse_logprobs(choice: Mapping[str, Any]) -> list[TokenLogprobs] | None:
    block = choice.get("logprobs")
    if not isinstance(block, Mapping) or block.get("content") is None:
        return None
    out = []
    for entry in block["content"]:
        top = tuple((_token_bytes(alt), _logprob(alt["logprob"])) for alt in entry.get("top_logprobs") or ())
        out.append(TokenLogprobs(_token_bytes(entry), _logprob(entry["logprob"]), top))
    return out


def _parse_chat(response: httpx.Response) -> _Reply:
    body = _json(response)
    try:
        choice = body["choices"][0]
        content = choice["message"].get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
        logprobs = _parse_logprobs(choice)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BadReply(
            f"the reply is not a chat completion ({type(exc).__name__}: {exc}): {snippet(response.text)}"
        ) from None
    text = content or ""
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int):
        tokens = len(logprobs) if logprobs is not None else len(text.split())
    return _Reply(text, tokens, logprobs)


def _cut(text: str, stops: Sequence[str]) -> str:
    """Remove the first stop string and what follows (servers do, but not all of them)."""
    cut = len(text)
    for stop in stops:
        if stop and (at := text.find(stop)) != -1:
            cut = min(cut, at)
    return text[:cut]
