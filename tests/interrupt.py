"""Kill a `cai generate` run mid-way, for the tests that resume it: a script run in a child process, SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kill_mid_run(script: str, out: Path, prompts: Path, total: int, at_least: int = 6) -> list[str]:
    """Run ``script`` (``python -c``, given OUT and PROMPTS as its arguments), SIGKILL it once ``at_least`` rows of
    ``out/trajectories.jsonl`` are written, and return the rows written by then (fewer than ``total``)."""
    trajectories = out / "trajectories.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out), str(prompts)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if trajectories.exists() and trajectories.read_text().count("\n") >= at_least:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = trajectories.read_text().count("\n")
    assert at_least <= written < total, "the kill should land mid-run"
    return trajectories.read_text().splitlines()[:written]
