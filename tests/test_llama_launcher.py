"""The llama-server launcher against fake servers: crashes at start, the --no-repack retry, clear errors.

Each fake is a small Python script standing in for ``llama-server``: it
appends its arguments to a file (so a test can count the starts), writes
llama.cpp-like lines to its log, and then, as the test asks, kills itself
with a signal (as the real binary does on some CPUs with AMX, right after
``llama threadpool init``), exits with an error, hangs, or answers
``/health`` on the port it was given.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from engine.backends.base import BackendError
from engine.backends.llama_server import NO_REPACK, running_server

FAKE = """#!{python}
import http.server, os, resource, signal, sys, time

args = sys.argv[1:]
with open({starts!r}, "a") as f:
    f.write(f"{{os.getpid()}} {{' '.join(args)}}\\n")
print("main: loading model", flush=True)
print("llama threadpool init, n_threads = 2", flush=True)
behaviour = {behaviour!r}
repack = "--no-repack" not in args
if behaviour == "sigill-unless-no-repack" and repack or behaviour == "always-sigsegv":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    os.kill(os.getpid(), signal.SIGILL if behaviour.startswith("sigill") else signal.SIGSEGV)
if behaviour == "bad-argument":
    print("error: invalid argument: --frobnicate", flush=True)
    sys.exit(1)
if behaviour == "hang":
    time.sleep(600)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{{"status": "ok"}}')

    def log_message(self, *_):
        pass


port = int(args[args.index("--port") + 1])
print("main: server is listening", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def fake_server(tmp_path: Path, behaviour: str) -> tuple[Path, Callable[[], list[str]]]:
    """A fake ``llama-server`` and a function that returns its starts so far (``PID ARGS...`` lines)."""
    starts = tmp_path / f"{behaviour}.starts"
    binary = tmp_path / behaviour / "llama-server"
    binary.parent.mkdir()
    binary.write_text(FAKE.format(python=sys.executable, starts=str(starts), behaviour=behaviour))
    binary.chmod(0o755)

    def started() -> list[str]:
        return starts.read_text().splitlines() if starts.exists() else []

    return binary, started


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_server_that_crashes_at_start_is_started_again_with_no_repack(tmp_path: Path, gguf: Path) -> None:
    binary, started = fake_server(tmp_path, "sigill-unless-no-repack")
    log = tmp_path / "server.log"
    said: list[str] = []
    with running_server(log, gguf=gguf, binary=binary, say=said.append, startup_timeout=30) as server:
        assert httpx.get(server.url.removesuffix("/v1") + "/health", timeout=5).status_code == 200
        assert NO_REPACK in server.command
    assert [NO_REPACK in line for line in started()] == [False, True]
    assert said == list(server.notes)
    assert "was killed by SIGILL while starting" in said[0] and f"once more with {NO_REPACK}" in said[0]
    assert "llama threadpool init" in said[0]  # the end of its log, where it died
    text = log.read_text()
    assert text.count("llama threadpool init") == 2 and "[cai] llama-server was killed by SIGILL" in text
    with pytest.raises(httpx.HTTPError):  # stopped on exit
        httpx.get(server.url.removesuffix("/v1") + "/health", timeout=2)

    # the next start of the same binary in this process needs no crash to learn it
    with running_server(log, gguf=gguf, binary=binary, say=said.append, startup_timeout=30) as again:
        assert NO_REPACK in again.command and again.notes == ()
    assert len(started()) == 3 and NO_REPACK in started()[2]


def test_a_server_that_crashes_with_no_repack_too_is_one_clear_error(tmp_path: Path, gguf: Path) -> None:
    binary, started = fake_server(tmp_path, "always-sigsegv")
    said: list[str] = []
    begin = time.monotonic()
    with (
        pytest.raises(BackendError) as error,
        running_server(tmp_path / "server.log", gguf=gguf, binary=binary, say=said.append, startup_timeout=30),
    ):
        pytest.fail("the server did not start, so the block must not run")
    assert time.monotonic() - begin < 20  # it died: no waiting for the start-up timeout
    message = str(error.value)
    assert f"llama-server ({binary}) was killed by SIGSEGV while starting" in message
    assert f"again with {NO_REPACK}" in message
    assert "llama threadpool init" in message and str(tmp_path / "server.log") in message
    assert "Try: run it by hand" in message and "--model default" in message
    assert "Traceback" not in message
    assert len(started()) == 2 and len(said) == 1  # one retry, and it was announced


def test_a_server_that_refuses_its_arguments_is_not_retried(tmp_path: Path, gguf: Path) -> None:
    binary, started = fake_server(tmp_path, "bad-argument")
    with (
        pytest.raises(BackendError) as error,
        running_server(tmp_path / "server.log", gguf=gguf, binary=binary, say=print, startup_timeout=30),
    ):
        pytest.fail("the server did not start, so the block must not run")
    message = str(error.value)
    assert "exited with status 1 while starting" in message and "invalid argument: --frobnicate" in message
    assert "Try: run it by hand" in message
    assert len(started()) == 1  # --no-repack cures crashes, not refusals


def test_a_server_that_never_answers_is_stopped_after_the_timeout(tmp_path: Path, gguf: Path) -> None:
    binary, started = fake_server(tmp_path, "hang")
    begin = time.monotonic()
    with (
        pytest.raises(BackendError, match=r"did not answer /health within 1 s"),
        running_server(tmp_path / "server.log", gguf=gguf, binary=binary, say=print, startup_timeout=1),
    ):
        pytest.fail("the server did not start, so the block must not run")
    assert time.monotonic() - begin < 15
    [start] = started()
    with pytest.raises(ProcessLookupError):  # stopped, not left behind
        os.kill(int(start.split()[0]), 0)
