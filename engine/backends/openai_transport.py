"""HTTP for the OpenAI-compatible backend: requests in flight, retries with backoff, cancellation, what failed.

:class:`Transport` knows the server (its address, the API key, the timeouts)
and nothing of chats or scores: :mod:`engine.backends.openai_compat` builds the
payloads and reads the replies, raising :class:`BadReply` for a reply that is
not what the API promises.

Requests in flight
    :meth:`Transport.post_all` sends every payload as its own request, at most
    ``max_concurrency`` in flight at once, and returns the results in the
    order of the payloads. The first request that fails for good ends the call
    with a :class:`~engine.backends.base.BackendError`: requests not yet sent
    are never sent and those in flight are not tried again. The workers are
    daemon threads, so Ctrl-C returns at once even while a server hangs.

Retries
    HTTP 408/425/429 and 5xx replies, timeouts, refused or dropped connections
    and replies that are not the JSON a chat completion is (garbage, missing
    fields: :class:`BadReply`) are retried up to ``max_retries`` times, waiting
    a random time between half and all of ``backoff * 2**attempt`` seconds, or
    what the server's ``Retry-After`` says, at most ``max_backoff``. Then the
    call stops with a :class:`~engine.backends.base.BackendError` that names the
    URL, what failed, a snippet of the raw reply and the number of tries. Other
    4xx replies (bad key, unknown model, rejected parameter) are not retried.
    The retry loop is tenacity's; the waits sleep on the call's cancel event,
    so a failure elsewhere in the call ends them at once.

The API key (``$CAI_API_KEY``, else ``$OPENAI_API_KEY``) is sent as a bearer
token and never recorded or printed; neither is a ``user:password`` part of the
address.
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import tenacity

from engine.backends.base import BackendError, first_line
from engine.errors import UserError

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""The server when neither the caller nor ``$OPENAI_BASE_URL`` names one."""
KEY_VARIABLES = ("CAI_API_KEY", "OPENAI_API_KEY")
"""Environment variables that hold the API key, first found wins."""

T = TypeVar("T")

_RETRYABLE = {408, 425, 429}
_SNIPPET = 200


class Transient(BackendError):
    """A try that failed in a way worth another try; the message says what failed (without the URL).

    Attributes:
        retry_after: Seconds the server's ``Retry-After`` asked for, when it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadReply(Transient):
    """A reply that is not what the API promises (not JSON, missing fields): retried like a 5xx."""


class _Refused(BackendError):
    """A 4xx reply other than 408/425/429: the request itself is wrong, so it is not retried."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Cancelled(UserError):
    """Another request of the same call failed for good; this one was not sent again."""


def snippet(text: str) -> str:
    """The start of a raw reply, quoted, for messages."""
    text = text.strip()
    return repr(text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else ""))


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise BackendError("the openai backend needs httpx: pip install httpx") from None
    return httpx


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


def _parse_models(response: httpx.Response) -> list[str] | None:
    """Model ids from ``/models``; None when the server answers something else (the check is only a courtesy)."""
    try:
        data = response.json()["data"]
        return [str(item["id"]) for item in data]
    except (ValueError, KeyError, TypeError):
        return None


class Transport:
    """Requests to one OpenAI-compatible server, many in flight, with retries.

    Args:
        model: The model's name on the server (named in the message of a 404).
        base_url: The API root; default ``$OPENAI_BASE_URL``, else :data:`DEFAULT_BASE_URL`.
        api_key: Bearer token; default ``$CAI_API_KEY``, else ``$OPENAI_API_KEY``, else none.
        max_concurrency: Most requests in flight at once.
        timeout: Seconds to wait for a reply (per try).
        connect_timeout: Seconds to wait for a connection (per try).
        max_retries: Tries after the first before a request fails for good.
        backoff: First wait between tries, in seconds (doubled each time, jittered).
        max_backoff: Longest wait between tries, ``Retry-After`` included.

    Raises:
        BackendError: httpx is missing, a setting is out of range, or the address is not a server's.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None,
        max_concurrency: int,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        backoff: float,
        max_backoff: float,
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
        self.base_url = str(parsed.copy_with(username=None, password=None)).rstrip("/")
        """The API root without any user:password part (what messages and provenance show)."""
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
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
        """Model ids the server listed (after :meth:`check`), for messages about an unknown model."""

    def check(self) -> None:
        """Ask the server for its models, so an unreachable server or a refused key fails now.

        Raises:
            BackendError: The server cannot be reached, or it refuses the key. A server that
                lists no models (404) is fine: whether the model exists shows on the first request.
        """
        try:
            self.served = self.request("GET", "models", None, _parse_models, threading.Event())
        except _Refused as exc:
            if exc.status in (401, 403):
                raise

    def close(self) -> None:
        """Close the connections (the transport cannot be used afterwards)."""
        self._client.close()

    def post_all(self, path: str, payloads: Sequence[dict[str, Any]], parse: Callable[[httpx.Response], T]) -> list[T]:
        """POST every payload to ``path``, at most ``max_concurrency`` at a time; results in order.

        The workers are daemon threads made for this call, so a Ctrl-C (or a
        failure) returns at once and never waits at exit for a hanging server.

        Raises:
            BackendError: The first request that failed for good (or whatever ``parse`` raised).
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
                    results[i] = self.request("POST", path, payloads[i], parse, cancel)
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

    def request(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        parse: Callable[[httpx.Response], T],
        cancel: threading.Event,
    ) -> T:
        """One request with retries (see "Retries" in the module docstring).

        Raises:
            BackendError: The request failed for good: a reply that is not retried, or the last try failed.
            _Cancelled: ``cancel`` was set before a try or during a wait.
        """
        where = f"{self.base_url}/{path}"
        tries = self.max_retries + 1

        def attempt() -> T:
            if cancel.is_set():
                raise _Cancelled
            return self._try(method, path, payload, parse, where)

        def pause(seconds: float) -> None:
            if cancel.wait(seconds):
                raise _Cancelled

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(tries),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=pause,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Transient as exc:
            raise BackendError(
                f"{where}: {exc}; gave up after {tries} tries. Check that the server is up and healthy "
                "(or raise CAI_OPENAI_TIMEOUT / CAI_OPENAI_MAX_RETRIES), then rerun the same command: "
                "finished rows are saved and the run resumes"
            ) from None

    def _try(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        parse: Callable[[httpx.Response], T],
        where: str,
    ) -> T:
        """One try: the parsed reply, or :class:`Transient` (try again) or :class:`_Refused` (do not)."""
        lib = self._httpx
        try:
            response = self._client.request(method, path, json=payload)
        except lib.TimeoutException as exc:
            raise Transient(f"no reply within {self.timeout:g} s ({type(exc).__name__})") from None
        except lib.TransportError as exc:
            raise Transient(f"connection failed ({type(exc).__name__}: {first_line(exc)})") from None
        status = response.status_code
        if status == 200:
            return parse(response)
        if status in _RETRYABLE or status >= 500:
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise Transient(f"HTTP {status}: {snippet(response.text)}", retry_after=retry_after)
        raise _Refused(self._refused(where, status, response.text), status)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next try: what ``Retry-After`` said, else jittered exponential backoff; capped."""
        failed = state.outcome.exception() if state.outcome is not None else None
        wait_for = failed.retry_after if isinstance(failed, Transient) else None
        if wait_for is None:
            step = self.backoff * 2 ** (state.attempt_number - 1)
            wait_for = step / 2 + self._random.uniform(0, step / 2)
        return min(wait_for, self.max_backoff)

    def _refused(self, where: str, status: int, body: str) -> str:
        text = f"{where}: HTTP {status}: {snippet(body)}"
        if status in (401, 403):
            return f"{text}; the server refused the API key: set {' or '.join(KEY_VARIABLES)}"
        if status == 404:
            served = f" (it serves: {', '.join(self.served)})" if self.served else ""
            return f"{text}; check the model name {self.model!r}{served} and the base URL (usually ends in /v1)"
        return f"{text}; the server rejected the request (not retried)"
