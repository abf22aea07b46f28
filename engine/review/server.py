"""The review page's web app (FastAPI): the page, its static files, and a small JSON API.

Every ``/api`` request carries the token that ``cai review`` printed in its URL
(``X-Review-Token`` header, or ``?token=``): none is 401, a wrong one 403. The
page itself needs the token in its URL too. Requests whose ``Host`` is not the
address the server was started on are refused (421), so a web page elsewhere
cannot reach the server through a DNS name pointed at 127.0.0.1. Answers carry
a Content-Security-Policy that allows only the page's own script and style:
model text is inserted as text, never as markup, and even if it were, an
injected ``<script>`` would not run.

API (JSON)
    ``GET /api/run``                    run summary, filter values and counts; ``panel``: labelled by several judges
    ``GET /api/pairs?…``                one page of the filtered list (``offset``, ``limit`` ≤ 500; ``disagreed``,
                                        ``split``, ``unparsed``: true/false)
    ``GET /api/pairs/{id}``             a pair's conversation, critiques, diffs, judge verdicts and decision
    ``POST /api/pairs/{id}/decision``   ``{"action": accept|flip|drop|clear|note, "revision": N, "note"?: str}``
    ``GET /api/pairs/{id}/explain``     on demand: which sentences of chosen and rejected pushed the run's judge
                                        (:mod:`engine.explain`: the attribution's JSON, pushes toward chosen);
                                        the judge loads on the first such request

Bad requests get a 4xx with ``{"error": message}``, never a 500: a body over
:data:`MAX_BODY` is 413 (refused as soon as its ``Content-Length``, or the
bytes read so far of a chunked body, pass the cap; nothing more is read), an
unknown action, a revision that is not a whole number, a note over
:data:`MAX_NOTE` characters or a bad list query is 422, an unknown pair 404.
A line of the run's files that can no longer be read (the run was edited or
made again while the server ran) is a 500 whose message names the line.
"""

from __future__ import annotations

import hmac
import re
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.records import ReviewError
from engine.review.decisions import DecisionLog, as_json
from engine.review.pairs import PairEntry, PairIndex, story

if TYPE_CHECKING:
    from engine.judge.panel import PairJudge

MAX_PAGE = 500
MAX_NOTE = 10_000
"""Characters of a note."""
MAX_BODY = 64 * 1024
"""Bytes of a request body: the longest note, even with every character escaped in JSON (6 bytes), fits."""
MIN_TOKEN = 16
"""Characters of a token given with ``--token`` / ``CAI_REVIEW_TOKEN``."""
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")
_DIGITS = re.compile(r"[0-9]+")
SHOWN_ID = 80
"""Characters of an unknown pair id quoted back in an error."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}


class DecisionIn(BaseModel):
    """A click on the page."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "flip", "drop", "clear", "note"]
    revision: int = Field(ge=0, strict=True, description="The pair's revision the page showed (0: never decided).")
    note: str | None = Field(default=None, max_length=MAX_NOTE)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard the server (None: it can): too short to be secret, or not safe in a URL."""
    how = (
        "leave --token out for a new random one each start, or make one with "
        "`python3 -c 'import secrets; print(secrets.token_urlsafe(18))'`"
    )
    if len(token) < MIN_TOKEN:
        return f"a token of {len(token)} characters is easy to guess; use at least {MIN_TOKEN}: {how}"
    bad = next((c for c in token if not _URL_SAFE.fullmatch(c)), None)
    if bad is not None:
        return f"the token holds {bad!r}, which a URL does not carry as it is; use letters, digits, - _ . ~ only: {how}"
    return None


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, reading no more than that.

    Starlette reads a body whole into memory, whatever its size, and uvicorn
    sets no limit either; so the body is read here first, a chunk at a time,
    and given to the app only once it is known to fit. A declared
    ``Content-Length`` over the limit is refused before anything is read, a
    chunked body as soon as its chunks pass the limit.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and _DIGITS.fullmatch(declared.strip()) and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = _error(413, f"request body over {self.limit // 1024} KiB; a note holds at most {MAX_NOTE} characters")
        answer.headers["Connection"] = "close"  # the rest of the body is never read
        await answer(scope, receive, send)


def _static(name: str) -> Path:
    return Path(str(resources.files("engine.review") / "static" / name))


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn (``port`` 0: a free one).

    Made with ``IPPROTO_TCP`` named: asyncio then turns Nagle's algorithm off
    (TCP_NODELAY), which takes ~40 ms off every answer to the page.

    Raises:
        OSError: The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def create_app(
    run_dir: Path,
    token: str,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    explain_judge: Callable[[], PairJudge] | None = None,
) -> FastAPI:
    """The app for one run folder; ``hosts`` are the names the ``Host`` header may carry (empty: any).

    Args:
        explain_judge: Makes the judge that explains pairs (default: the run's own judge and settings,
            :func:`engine.explain.inputs.run_judge`); called once, on the first explanation asked for.
    """
    index = PairIndex(run_dir)
    log = DecisionLog(run_dir)
    app = FastAPI(title="cai review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.index, app.state.log, app.state.decided = index, log, 0
    app.add_middleware(BodyLimit, limit=MAX_BODY)  # inside the guard: a request without the token is not read

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if hosts and host not in hosts and host != "::1":
            return _error(421, f"this server answers to {', '.join(hosts)} only")
        if request.url.path.startswith("/api/") or request.url.path == "/":
            given = request.headers.get("x-review-token") or request.query_params.get("token")
            if not given:
                return _error(401, "missing token: open the URL that `cai review` printed")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(403, "wrong token: open the URL that `cai review` printed")
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid")))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return _error(404, f"no file {name}")
        return FileResponse(_static(name), media_type=STATIC[name])

    def entry_of(pair_id: str) -> PairEntry:
        entry = index.by_id.get(pair_id)
        if entry is None:
            shown = pair_id if len(pair_id) <= SHOWN_ID else pair_id[:SHOWN_ID] + "…"
            raise ReviewError(f"no pair {shown!r} in this run", status=404)
        return entry

    @app.exception_handler(ReviewError)
    async def review_error(request: Request, exc: ReviewError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.get("/api/run")
    def run() -> dict[str, Any]:
        return {
            "run": str(run_dir),
            "rows": index.rows,
            "pairs": len(index.entries),
            "judged": index.judged,
            "panel": index.panel,
            "facets": index.facets,
            "decisions": log.counts(),
        }

    @app.get("/api/pairs")
    def pairs(
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        category: str | None = None,
        principle: str | None = None,
        status: str | None = None,
        min_margin: float | None = Query(None, ge=-1, le=1),
        max_margin: float | None = Query(None, ge=-1, le=1),
        disagreed: bool | None = None,
        split: bool | None = None,
        unparsed: bool | None = None,
        reviewed: Literal["yes", "no", "accept", "flip", "drop"] | None = None,
        q: str | None = Query(None, max_length=200),
    ) -> dict[str, Any]:
        decided = log.snapshot()
        needle = q.lower() if q else None

        def keep(e: PairEntry) -> bool:
            if category is not None and e.category != category:
                return False
            if principle is not None and principle not in e.principles:
                return False
            if status is not None and e.status != status:
                return False
            if (min_margin is not None or max_margin is not None) and e.margin is None:
                return False
            if min_margin is not None and e.margin is not None and e.margin < min_margin:
                return False
            if max_margin is not None and e.margin is not None and e.margin > max_margin:
                return False
            if disagreed is not None and e.disagreed != disagreed:
                return False
            if split is not None and e.split != split:
                return False
            if unparsed is not None and (e.unparsed > 0) != unparsed:
                return False
            if reviewed is not None:
                d = decided.get(e.id)
                action = d.action if d is not None else None
                if (reviewed == "yes" and action is None) or (reviewed == "no" and action is not None):
                    return False
                if reviewed in ("accept", "flip", "drop") and action != reviewed:
                    return False
            return needle is None or needle in e.prompt.lower()

        matched = [e for e in index.entries if keep(e)]
        rows = []
        for e in matched[offset : offset + limit]:
            row = e.row()
            d = decided.get(e.id)
            row["decision"] = d.action if d is not None else None
            row["note"] = bool(d.note) if d is not None else False
            rows.append(row)
        return {"total": len(matched), "offset": offset, "rows": rows}

    @app.get("/api/pairs/{pair_id}")
    def pair(pair_id: str) -> dict[str, Any]:
        entry = entry_of(pair_id)
        trajectory = index.trajectory(entry)
        label = index.label(entry)
        decision, past = log.get(pair_id)
        candidates = trajectory.texts()
        texts = {"chosen": candidates[entry.chosen_from], "rejected": candidates[entry.rejected_from]}
        return {
            **entry.row(),
            "prompt": trajectory.prompt,
            "chosen_from": entry.chosen_from,
            "rejected_from": entry.rejected_from,
            "texts": texts,
            "story": story(trajectory),
            "judge": None
            if label is None
            else {
                "model": label.judge_model,
                "chosen_prob": label.chosen_prob,
                "comparisons": [c.model_dump(exclude={"judgments"}) for c in label.comparisons],
            },
            "decision": as_json(decision),
            "history": [as_json(d) for d in past],
        }

    judges: list[PairJudge] = []
    judge_lock = threading.Lock()

    @app.get("/api/pairs/{pair_id}/explain")
    def explain(pair_id: str, top: int = Query(3, ge=1, le=20), seed: int = 0) -> dict[str, Any]:
        from engine.errors import UserError
        from engine.explain import explain as attribute
        from engine.explain import inputs

        entry = entry_of(pair_id)
        found = inputs.RunPair(index.trajectory(entry), index.label(entry), entry.chosen_from, entry.rejected_from)
        try:
            rules = inputs.run_constitution(run_dir, None)
            with judge_lock:  # one judge per server, and one explanation at a time on it
                if not judges:
                    if explain_judge is not None:
                        judges.append(explain_judge())
                    else:
                        from engine.backends import load_backend

                        judges.append(inputs.run_judge(run_dir, (), rules, load_backend, seed=seed))
                judge = judges[0]
                target = inputs.explainable_run_pair(found, rules, judge.settings, None)
                result = attribute(judge, target.pair, top=top, seed=seed, names=target.names)
        except UserError as exc:
            raise ReviewError(f"cannot explain this pair: {exc}", status=422) from None
        return result.to_dict() | {
            "id": pair_id,
            "chosen_from": entry.chosen_from,
            "rejected_from": entry.rejected_from,
            "note": target.note,
        }

    @app.post("/api/pairs/{pair_id}/decision")
    def decide(pair_id: str, body: DecisionIn) -> dict[str, Any]:
        entry = entry_of(pair_id)
        decision = log.decide(
            pair_id,
            body.action,
            revision=body.revision,
            shown=(entry.chosen_from, entry.rejected_from),
            texts=index.texts(entry),
            note=body.note,
        )
        app.state.decided += 1
        return {"decision": as_json(decision), "counts": log.counts()}

    return app


class BackgroundServer:
    """An app served by uvicorn in a daemon thread on a free loopback port (tests, benchmarks, notebooks).

    ``cai review`` serves in the foreground instead; both listen on :func:`listen`'s socket.
    """

    def __init__(self, app: FastAPI, *, startup_timeout: float = 10.0) -> None:
        import uvicorn

        self.app = app
        self.sock = listen("127.0.0.1", 0)
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the review server did not start")
            time.sleep(0.01)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop serving and wait for the thread (at most 10 s)."""
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(10)
        self.sock.close()
