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

Requests in flight
    Every chat of a ``generate`` or ``score`` call is its own request; at most
    ``max_concurrency`` are in flight at once (``load_backend`` passes its
    ``batch_size``, i.e. ``--batch-size``: the server batches the requests
    in flight the way the ``hf`` backend batches a forward pass). Results come
    back in the order of the chats. The first request that fails for good
    ends the call with a :class:`BackendError`: requests not yet sent are
    never sent and those in flight are not tried again. The workers are
    daemon threads, so Ctrl-C returns at once even while a server hangs.

Retries
    HTTP 408/425/429 and 5xx replies, timeouts, refused or dropped connections
    and replies that are not the JSON a chat completion is (garbage, missing
    fields) are retried up to ``max_retries`` times, waiting a random time
    between half and all of ``backoff * 2**attempt`` seconds, or what the
    server's ``Retry-After`` says, at most ``max_backoff``. Then the call stops
    with a :class:`BackendError` that names the URL, what failed, a snippet of
    the raw reply and the number of tries. Other 4xx replies (bad key, unknown
    model, rejected parameter) are not retried. Rows finished before the
    failure are on disk, so rerunning the same command resumes.

Sampling
    ``max_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop`` go to the
    server (which ones it honours is up to the server; vLLM and llama-server
    honour all five). Every request carries the same ``seed``, so with a
    server that honours it a reply depends on its own conversation only, not
    on what else was in flight. Stop strings are also cut on this side, so a
    reply never contains one. ``Completion.tokens`` is the server's
    ``usage.completion_tokens`` (a word count when the server gives no usage).

Scoring (an approximation, unlike the ``hf`` backend's exact sums)
    A chat API cannot score a given continuation, so ``score`` asks for a
    short greedy completion with ``logprobs`` and ``top_logprobs`` (20
    alternatives per token) and reads the options off it. Options usually
    share a prefix (``"("`` in ``"(A)"``/``"(B)"``): the greedy tokens are
    followed while they stay inside that shared prefix, and at each of those
    positions every alternative token whose text reaches past the shared
    prefix is credited to the option(s) its text agrees with. An option's
    log-probability is the log-sum of its credited alternatives, each plus
    the log-probability of the greedy path before it; the tokens of an
    option after the one that tells the options apart are taken as certain.
    When the options share at most a short prefix (``"("``), a first token
    that skips it and starts with an option's distinctive part (``A`` for
    ``(A)``, ``Yes`` for ``(Yes)``), followed by nothing, the shared ending
    or punctuation, is credited to that option too: a small chat model
    served by llama-server mostly answers ``A``/``B`` or opens with a quote
    of the prompt, and ``(`` alone among its alternatives does not tell
    which letter would follow it. (Unlike a written verdict, a lone token
    ``A`` may also be the article of "A response...": an approximation.)
    An option none of whose tokens is among the alternatives gets an upper
    bound: the smaller of the least likely alternative shown and the mass
    not shown. When no option is found at all (the reply starts otherwise
    and no alternative matches), every score is NaN, which the judge marks
    unparsed. The same holds when the options share a long prefix (the
    chain-of-thought judge's reasoning) and the greedy reply does not repeat
    it word for word: for that judge through a server prefer the ``parse``
    reader.

    A server that returns no log-probabilities is an error, unless
    ``score_mode="parse"`` (``CAI_OPENAI_SCORE=parse``): then the options are
    scored from a short greedy reply, 0 for the option it starts with and
    -inf for the others (NaN for all when it starts with none), i.e. a hard
    label per order instead of a probability.

Settings from the environment (kept out of the spec, which names the model in a run's manifest)
    ``CAI_OPENAI_TIMEOUT`` (seconds per request, default 120),
    ``CAI_OPENAI_MAX_RETRIES`` (default 5), ``CAI_OPENAI_BACKOFF`` (seconds,
    default 0.5), ``CAI_OPENAI_SCORE`` (``logprobs`` or ``parse``). Before a
    run starts, ``GET /models`` checks that the server answers and takes the
    key (a server without that route is fine).
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from engine.backends import BackendError, first_line
from engine.backends.base import Backend, Chat, Completion, SamplingParams, ScoreRequest

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_VARIABLES = ("CAI_API_KEY", "OPENAI_API_KEY")
"""Environment variables that hold the API key, first found wins."""
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
T = TypeVar("T")
S = TypeVar("S", str, bytes)

_RETRYABLE = {408, 425, 429}
_SNIPPET = 200


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


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise BackendError("the openai backend needs httpx: pip install httpx") from None
    return httpx


def _snippet(text: str) -> str:
    text = text.strip()
    return repr(text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else ""))


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# ---------------------------------------------------------------- scoring from token log-probabilities


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token with its log-probability and the top alternatives at its position."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...]


def _logsumexp(values: Sequence[float]) -> float:
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def option_logprobs(options: Sequence[str], tokens: Sequence[TokenLogprobs]) -> list[float]:
    """Approximate log-probabilities of ``options`` as the start of a reply, from a greedy reply's token logprobs.

    See "Scoring" in the module docstring.
    """
    if not options:
        return []
    targets = [option.encode() for option in options]
    shared = common_prefix(targets)
    bare = _bare_cores(targets, shared)
    credited: list[list[float]] = [[] for _ in options]
    path, path_logprob = b"", 0.0
    floor = -math.inf
    for position in tokens:
        alternatives = list(position.top)
        if all(text != position.token for text, _ in alternatives):
            alternatives.append((position.token, position.logprob))
        for text, logprob in alternatives:
            reply = path + text
            if len(reply) <= len(shared):
                continue  # does not tell the options apart
            for i, target in enumerate(targets):
                if target.startswith(reply) or reply.startswith(target):
                    credited[i].append(path_logprob + logprob)
        if bare and not path:  # the first token: one that skips the shared prefix ("A" for "(A)")
            for text, logprob in alternatives:
                for i in _bare_matches(text, bare):
                    credited[i].append(logprob)
        shown = [logprob for _, logprob in alternatives]
        unshown = 1.0 - sum(math.exp(v) for v in shown)
        floor = path_logprob + min(min(shown), math.log(unshown) if unshown > 0 else -math.inf)
        reply = path + position.token
        if len(reply) > len(shared) or not shared.startswith(reply):
            break  # the greedy reply has left the shared prefix: the options were told apart here
        path, path_logprob = reply, path_logprob + position.logprob
    if not any(credited):
        return [math.nan] * len(options)
    return [_logsumexp(found) if found else floor for found in credited]


_BARE_ENDS = b".,:;!?)]\n\t"


def _bare_cores(targets: Sequence[bytes], shared: bytes) -> tuple[bytes, list[bytes]] | None:
    """The options' shared ending and distinctive parts, when they share a short non-empty prefix (``"("``)."""
    if len(targets) < 2 or not 0 < len(shared) <= 2:
        return None
    suffix = common_prefix([t[len(shared) :][::-1] for t in targets])[::-1]
    cores = [t[len(shared) : len(t) - len(suffix)].strip() for t in targets]
    if not all(cores) or len(set(cores)) < len(cores):
        return None
    return suffix, cores


def _bare_matches(text: bytes, bare: tuple[bytes, list[bytes]]) -> list[int]:
    """Options whose distinctive part ``text`` starts with, followed by nothing, the shared ending or punctuation."""
    suffix, cores = bare
    text = text.lstrip()
    found = []
    for i, core in enumerate(cores):
        after = text[len(core) :]
        if text.startswith(core) and (not after or (suffix and after.startswith(suffix)) or after[:1] in _BARE_ENDS):
            found.append(i)
    return found


def common_prefix(items: Sequence[S]) -> S:
    """The longest common prefix of strings (or of byte strings); ``items`` must not be empty."""
    if not items:
        raise ValueError("no items")
    first, last = min(items), max(items)
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


def verdict_logprobs(options: Sequence[str], reply: str) -> list[float]:
    """Scores from a written reply: 0 for the option it starts with, -inf for the others, NaN when none.

    Leading whitespace is skipped. When the reply does not start with an
    option, and the options share at most a short prefix (such as ``"("``),
    it may also start with an option's distinctive part (``A`` of ``(A)``)
    followed by the options' shared ending, punctuation, nothing, or (for a
    part longer than one letter) a space: ``"A) ..."``, ``"Yes, ..."``,
    ``"No it does not"``. The longest matching option wins.
    """
    if not options:
        return []
    text = reply.lstrip()
    matches = [i for i, option in enumerate(options) if option and text.startswith(option)]
    prefix = common_prefix(list(options))
    if not matches and len(options) > 1 and len(prefix) <= 2:
        suffix = common_prefix([o[len(prefix) :][::-1] for o in options])[::-1]
        rest_of_reply = text.removeprefix(prefix).lstrip()
        for i, option in enumerate(options):
            core = option[len(prefix) : len(option) - len(suffix)].strip()
            if not core or not rest_of_reply.startswith(core):
                continue
            after = rest_of_reply[len(core) :]
            ends = ".,:;!?)]\n\t" + (" " if len(core) > 1 else "")  # "A response" is no verdict, "Yes it is" is
            if not after or (suffix and after.startswith(suffix)) or after[0] in ends:
                matches.append(i)
    if not matches:
        return [math.nan] * len(options)
    best = max(matches, key=lambda i: len(options[i]))
    return [0.0 if i == best else -math.inf for i in range(len(options))]


# ---------------------------------------------------------------- the backend


class _Cancelled(Exception):
    """Another request of the same call failed for good; this one was not sent again."""


class _Refused(BackendError):
    """A 4xx reply other than 408/425/429: the request itself is wrong, so it is not retried."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _BadReply(Exception):
    """A reply that is not what the API promises (not JSON, missing fields): retried like a 5xx."""


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
        lib = _import_httpx()
        if max_concurrency < 1:
            raise BackendError(f"max_concurrency must be at least 1, not {max_concurrency}")
        if max_retries < 0 or timeout <= 0 or backoff < 0 or max_backoff < 0:
            raise BackendError("timeout must be positive; max_retries, backoff and max_backoff not negative")
        url = (base_url or os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")
        try:
            parsed = lib.URL(url)
        except (lib.InvalidURL, TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise BackendError(f"{url!r}: not a server address; use http(s)://HOST[:PORT]/v1")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = str(parsed.copy_with(username=None, password=None)).rstrip("/")
        """The API root without any user:password part (what messages and provenance show)."""
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.top_logprobs = top_logprobs
        self.max_score_tokens = max_score_tokens
        self.score_mode: ScoreMode = score_mode
        key = api_key
        if key is None:
            key = next((os.environ[v].strip() for v in KEY_VARIABLES if os.environ.get(v, "").strip()), None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: httpx.Client = lib.Client(
            base_url=url + "/",
            headers=headers,
            timeout=lib.Timeout(timeout, connect=min(connect_timeout, timeout)),
            limits=lib.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._httpx = lib
        self._random = random.Random()
        self.served: list[str] | None = None
        """Model ids the server listed (when ``check`` asked), for messages about an unknown model."""
        if check:
            try:
                self.served = self._request("GET", "models", None, _parse_models, threading.Event())
            except _Refused as exc:
                if exc.status in (401, 403):
                    raise
                # Some servers list no models (404): whether the model exists shows on the first request.

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
        replies = self._all([self._payload(chat, **payload) for chat in chats], _parse_chat)
        return [Completion(text=_cut(reply.text, params.stop), tokens=reply.tokens) for reply in replies]

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        if self.score_mode == "parse":
            payloads = [
                self._payload(r.chat, max_tokens=self._score_tokens(r.options, whole=True), temperature=0, seed=0)
                for r in requests
            ]
            replies = self._all(payloads, _parse_chat)
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
        replies = self._all(payloads, self._parse_scored)
        out = []
        for request, reply in zip(requests, replies, strict=True):
            assert reply.logprobs is not None
            out.append(option_logprobs(request.options, reply.logprobs))
        return out

    def close(self) -> None:
        """Close the connections (the backend cannot be used afterwards)."""
        self._client.close()

    # ------------------------------------------------------------ requests

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

    def _all(self, payloads: Sequence[dict[str, Any]], parse: Callable[[httpx.Response], T]) -> list[T]:
        """POST every payload to chat/completions, at most ``max_concurrency`` at a time; results in order.

        The workers are daemon threads made for this call, so a Ctrl-C (or a
        failure) returns at once and never waits at exit for a hanging server.
        """
        n = len(payloads)
        results: list[T | None] = [None] * n
        errors: list[BaseException] = []
        lock = threading.Lock()
        cancel, finished = threading.Event(), threading.Event()
        cursor, left = iter(range(n)), [n]

        def work() -> None:
            while not cancel.is_set():
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                try:
                    results[i] = self._request("POST", "chat/completions", payloads[i], parse, cancel)
                except _Cancelled:
                    return
                except BaseException as exc:  # the first failure ends the call, whatever it is
                    with lock:
                        errors.append(exc)
                    cancel.set()
                    finished.set()
                    return
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        finished.set()

        if n == 0:
            return []
        for _ in range(min(self.max_concurrency, n)):
            threading.Thread(target=work, name="cai-openai", daemon=True).start()
        try:
            finished.wait()
        finally:
            cancel.set()  # requests not yet sent are never sent; those in flight are not tried again
        if errors:
            raise errors[0]
        return cast(list[T], results)

    def _request(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        parse: Callable[[httpx.Response], T],
        cancel: threading.Event,
    ) -> T:
        """One request with retries; raises :class:`BackendError` when it fails for good."""
        lib = self._httpx
        where = f"{self.base_url}/{path}"
        tries = self.max_retries + 1
        failure = ""
        for attempt in range(tries):
            if cancel.is_set():
                raise _Cancelled
            wait_for: float | None = None
            try:
                response = self._client.request(method, path, json=payload)
            except lib.TimeoutException as exc:
                failure = f"no reply within {self.timeout:g} s ({type(exc).__name__})"
            except lib.TransportError as exc:
                failure = f"connection failed ({type(exc).__name__}: {first_line(exc)})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return parse(response)
                    except _BadReply as exc:
                        failure = str(exc)
                elif status in _RETRYABLE or status >= 500:
                    failure = f"HTTP {status}: {_snippet(response.text)}"
                    wait_for = _retry_after(response.headers.get("retry-after"))
                else:
                    raise _Refused(self._refused(where, status, response.text), status)
            if attempt + 1 < tries:
                if wait_for is None:
                    step = self.backoff * 2**attempt
                    wait_for = step / 2 + self._random.uniform(0, step / 2)
                if cancel.wait(min(wait_for, self.max_backoff)):
                    raise _Cancelled
        raise BackendError(
            f"{where}: {failure}; gave up after {tries} tries. Check that the server is up and healthy "
            "(or raise CAI_OPENAI_TIMEOUT / CAI_OPENAI_MAX_RETRIES), then rerun the same command: "
            "finished rows are saved and the run resumes"
        )

    def _refused(self, where: str, status: int, body: str) -> str:
        text = f"{where}: HTTP {status}: {_snippet(body)}"
        if status in (401, 403):
            return f"{text}; the server refused the API key: set {' or '.join(KEY_VARIABLES)}"
        if status == 404:
            served = f" (it serves: {', '.join(self.served)})" if self.served else ""
            return f"{text}; check the model name {self.model!r}{served} and the base URL (usually ends in /v1)"
        return f"{text}; the server rejected the request (not retried)"


# ---------------------------------------------------------------- replies


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise _BadReply(f"the reply is not JSON: {_snippet(response.text)}") from None


def _parse_models(response: httpx.Response) -> list[str] | None:
    """Model ids from ``/models``; None when the server answers something else (the check is only a courtesy)."""
    try:
        data = response.json()["data"]
        return [str(item["id"]) for item in data]
    except (ValueError, KeyError, TypeError):
        return None


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
        raise _BadReply(
            f"the reply is not a chat completion ({type(exc).__name__}: {exc}): {_snippet(response.text)}"
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
