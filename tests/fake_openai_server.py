"""A deliberately misbehaving OpenAI-compatible server for tests: real HTTP on 127.0.0.1, in a thread.

It serves ``GET /v1/models`` and ``POST /v1/chat/completions``. Replies are a
deterministic function of the request (like the scripted backend), with
``logprobs``/``top_logprobs`` when asked. Tests switch its behaviour:

- ``plan``: behaviours for the next chat requests, one each, then ``default``:
  ``ok``, ``nologprobs`` (a reply without log-probabilities), ``429`` (with
  ``Retry-After: retry_after``), ``500``, ``503``, ``400``, ``401``, ``404``,
  ``garbage`` (200 with HTML), ``truncated`` (200 with cut-off JSON),
  ``badshape`` (200 with JSON that is no chat completion), ``hang`` (no reply
  for ``hang_seconds``), ``drop`` (close the connection without a reply).
- ``fail_after``/``fail_with``: after that many normal replies every chat
  request gets ``fail_with``; with ``drop`` the server is dead: ``/v1/models``
  is dropped too (as are later connections, until ``dead`` is set back to False).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], str]
Alternatives = Callable[[str], list[tuple[str, float]]]

_QUOTED = re.compile(r"<<<RESPONSE ([AB])>>>\n(.*?)\n<<<END RESPONSE \1>>>", re.DOTALL)
_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """The fake model's tokens: words and punctuation marks, each with the whitespace before it."""
    return _TOKEN.findall(text)


def default_reply(request: dict[str, Any]) -> str:
    """A reply that depends only on the conversation and the seed; a judge picks the longer response."""
    last = str(request["messages"][-1]["content"])
    found = {m.group(1): m.group(2) for m in _QUOTED.finditer(last)}
    if set(found) == {"A", "B"}:
        return "(A) is better" if len(found["A"]) >= len(found["B"]) else "(B) is better"
    if "(Yes)" in last and "(No)" in last:
        return "(No)"
    digest = hashlib.sha256(json.dumps(request["messages"], sort_keys=True).encode()).hexdigest()[:8]
    return f"Fake reply {digest}-{request.get('seed')} to: {last[:40]}"


def default_alternatives(token: str) -> list[tuple[str, float]]:
    """Top alternatives of a token: itself at -0.05, the other letter of a verdict at -2, filler after."""
    swaps = {"A": "B", "B": "A", "Yes": "No", "No": "Yes"}
    out = [(token, -0.05)]
    if token in swaps:
        out.append((swaps[token], -2.0))
    out += [(" zz", -6.0), (" qq", -7.0)]
    return out


class FakeOpenAIServer:
    """An OpenAI-compatible server on a free loopback port (see the module docstring)."""

    def __init__(self, model: str = "fake-model", *, port: int = 0, models: list[str] | None = None) -> None:
        self.model = model
        self.models = models if models is not None else [model]
        self.plan: deque[str] = deque()
        self.default = "ok"
        self.retry_after = "0"
        self.hang_seconds = 5.0
        self.delay = 0.0
        """Seconds each normal reply takes (to see requests in flight)."""
        self.honour_stop = True
        self.fail_after: int | None = None
        self.fail_with = "drop"
        self.dead = False
        self.reply: Reply = default_reply
        self.alternatives: Alternatives = default_alternatives
        self.requests: list[dict[str, Any]] = []
        """Bodies of the chat requests received, in order of arrival."""
        self.headers: list[dict[str, str]] = []
        self.replies = 0
        self.attempts = 0
        """Chat requests received, dropped ones included."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (later connections are refused) and wake hanging handlers."""
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------ replies

    def completion(self, request: dict[str, Any], *, logprobs: bool) -> dict[str, Any]:
        text = self.reply(request)
        if self.honour_stop:
            for stop in request.get("stop") or ():
                text = text.split(stop, 1)[0]
        tokens = tokenize(text)[: int(request.get("max_tokens") or 1 << 30)]
        text = "".join(tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if logprobs and request.get("logprobs"):
            k = int(request.get("top_logprobs") or 0)
            content = []
            for token in tokens:
                alternatives = self.alternatives(token)
                chosen = dict(alternatives).get(token, -0.05)
                content.append(
                    {
                        "token": token,
                        "logprob": chosen,
                        "bytes": list(token.encode()),
                        "top_logprobs": [
                            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives[:k]
                        ],
                    }
                )
            choice["logprobs"] = {"content": content}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": request.get("model"),
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(tokens), "total_tokens": 1 + len(tokens)},
        }

    def hold(self, request: dict[str, Any]) -> None:
        """Take the time a normal reply takes (``delay``) before it is sent; the stand-in server's slots override it."""
        if self.delay:
            self.release.wait(self.delay)

    def _next_behaviour(self) -> str:
        with self.lock:
            self.attempts += 1
            if self.dead:
                return "drop"
            if self.fail_after is not None and self.replies >= self.fail_after:
                self.dead = self.fail_with == "drop"
                return self.fail_with
            return self.plan.popleft() if self.plan else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def drop(self) -> None:
                self.close_connection = True

            def do_GET(self) -> None:
                if server.dead:
                    return self.drop()
                if self.path.rstrip("/") == "/v1/models":
                    data = [{"id": m, "object": "model", "owned_by": "fake"} for m in server.models]
                    return self.send(200, json.dumps({"object": "list", "data": data}).encode())
                self.send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self.send(404, b'{"error": {"message": "not found"}}')
                behaviour = server._next_behaviour()
                if behaviour == "drop":
                    return self.drop()
                request = json.loads(raw)
                with server.lock:
                    server.requests.append(request)
                    server.headers.append(dict(self.headers.items()))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.respond(behaviour, request)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def respond(self, behaviour: str, request: dict[str, Any]) -> None:
                if behaviour == "hang":
                    server.release.wait(server.hang_seconds)
                    self.close_connection = True
                    return
                if behaviour in ("429", "500", "503", "400", "401", "404"):
                    body = json.dumps({"error": {"message": f"fake {behaviour}", "type": "fake"}}).encode()
                    extra = {"Retry_After": server.retry_after} if behaviour == "429" else {}
                    return self.send(int(behaviour), body, **extra)
                if behaviour == "garbage":
                    return self.send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                if behaviour == "truncated":
                    return self.send(200, b'{"id": "x", "choices": [{"message": {"content": "Hel')
                if behaviour == "badshape":
                    return self.send(200, b'{"id": "x", "object": "chat.completion", "result": "hello"}')
                server.hold(request)
                reply = server.completion(request, logprobs=behaviour != "nologprobs")
                with server.lock:
                    server.replies += 1
                self.send(200, json.dumps(reply).encode())

        return Handler
