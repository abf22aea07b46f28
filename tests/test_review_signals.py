"""``cai review`` stopped by SIGTERM (a scheduler, ``kill``) or SIGHUP (a closed terminal) still applies the decisions.

Each test runs the real command in a subprocess on a scripted run, clicks
through the HTTP API with the printed token, stops it with the signal, and
reads the dataset back.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from datasets import load_from_disk

from engine.records import REVIEWS
from engine.review.decisions import DecisionLog
from engine.review.pairs import PairIndex
from engine.reviewed import decisions_pending
from tests.test_review import make_run
from tests.test_train_reviewed import hold_lock

URL = re.compile(r"open: (http://127\.0\.0\.1:\d+)/\?token=(\S+)")
START_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("signals") / "run")


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(template, out)
    return out


def read_url(fd: int, deadline: float) -> tuple[str, str]:
    """The base URL and token the command prints, read from ``fd`` (without blocking past the deadline)."""
    printed = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a pty whose other side closed
            chunk = b""
        if not chunk:
            break
        printed += chunk
        found = URL.search(printed.decode("utf-8", "replace"))
        if found:
            return found.group(1), found.group(2)
    raise AssertionError(f"cai review printed no URL: {printed.decode('utf-8', 'replace')}")


def click(base: str, token: str, pair: str, action: str) -> None:
    answer = httpx.post(
        f"{base}/api/pairs/{pair}/decision",
        headers={"X-Review-Token": token},
        json={"action": action, "revision": 0},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def labels_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in map(json.loads, (run_dir / "labels.jsonl").read_text().splitlines())}


def preferences(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in load_from_disk(str(run_dir / "dataset"))["preferences"]}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_sigterm_stops_the_server_gracefully_and_rebuilds_the_dataset(run_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "review", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        base, token = read_url(process.stdout.fileno(), time.monotonic() + START_TIMEOUT)
        dropped, flipped = [e.id for e in PairIndex(run_dir).entries[:2]]
        click(base, token, dropped, "drop")
        click(base, token, flipped, "flip")
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=EXIT_TIMEOUT)
    finally:
        stop(process)
    output = rest.decode()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "stopped by SIGTERM" in output
    assert "dataset rebuilt with 2 review decisions (0 accepted, 1 flipped, 1 dropped)" in output
    pairs, judged = preferences(run_dir), labels_of(run_dir)
    assert dropped not in pairs
    assert (pairs[flipped]["chosen_from"], pairs[flipped]["rejected_from"]) == (
        judged[flipped]["rejected_from"],
        judged[flipped]["chosen_from"],
    )
    assert pairs[flipped]["human_label"] == "flipped"


def _take_terminal() -> None:  # runs in the child, after setsid(): the pty on fd 0 becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_closing_the_terminal_stops_the_server_and_rebuilds_the_dataset(run_dir: Path) -> None:
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "review", str(run_dir), "--port", "0"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(slave)
    try:
        base, token = read_url(master, time.monotonic() + START_TIMEOUT)
        dropped = PairIndex(run_dir).entries[0].id
        click(base, token, dropped, "drop")
        os.close(master)  # the terminal window closes: the kernel hangs up the pty and sends SIGHUP
        master = -1
        process.wait(timeout=EXIT_TIMEOUT)
    finally:
        if master >= 0:
            os.close(master)
        stop(process)
    assert process.returncode == 0
    assert dropped not in preferences(run_dir)
    assert json.loads((run_dir / REVIEWS).read_text().splitlines()[-1])["action"] == "drop"


def test_a_plain_sighup_stops_it_too_and_decisions_left_by_a_killed_server_are_applied(run_dir: Path) -> None:
    # A server killed with SIGKILL never rebuilt: its decision is only in reviews.jsonl.
    entry = PairIndex(run_dir).entries[0]
    DecisionLog(run_dir).decide(
        entry.id,
        "drop",
        revision=0,
        shown=(entry.chosen_from, entry.rejected_from),
        texts=PairIndex(run_dir).texts(entry),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "review", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        read_url(process.stdout.fileno(), time.monotonic() + START_TIMEOUT)
        process.send_signal(signal.SIGHUP)
        rest, _ = process.communicate(timeout=EXIT_TIMEOUT)
    finally:
        stop(process)
    output = rest.decode()
    assert process.returncode == 0, output
    assert "stopped by SIGHUP" in output and "dataset rebuilt with 1 review decisions" in output
    assert entry.id not in preferences(run_dir)


def test_a_rebuild_that_cannot_run_says_so_in_one_line_and_leaves_the_decisions_pending(run_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "review", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    holder = None
    try:
        assert process.stdout is not None
        base, token = read_url(process.stdout.fileno(), time.monotonic() + START_TIMEOUT)
        click(base, token, PairIndex(run_dir).entries[0].id, "drop")
        holder = hold_lock(run_dir)  # a `cai label` on the same run is writing it
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=EXIT_TIMEOUT)
    finally:
        stop(process)
        if holder is not None:
            holder.kill()
            holder.wait(10)
    output = rest.decode()
    assert process.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another cai process" in errors[0] and "reviews.jsonl" in errors[0], output
    assert "Traceback" not in output
    assert decisions_pending(run_dir)  # `cai export` / `cai train` will rebuild
