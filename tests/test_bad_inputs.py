"""Every command that reads a file a user names, fed the usual kinds of bad file: one line, no traceback, no hang.

Each case names a command line with ``{bad}`` where the bad path goes; every
case runs with every kind of bad path in :data:`KINDS`. Model-free: the
commands must refuse the input before any model loads.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import cli


def _missing(tmp: Path) -> Path:
    return tmp / "missing" / "nothing.jsonl"


def _folder(tmp: Path) -> Path:
    path = tmp / "a-folder.jsonl"
    path.mkdir()
    (path / "notes.txt").write_text("not a run")
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.jsonl"
    os.mkfifo(path)
    return path


def _binary(tmp: Path) -> Path:
    path = tmp / "image.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.jsonl"
    path.write_text("")
    return path


def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.jsonl"
    path.write_text('{"prompt": [1, 2, {"role": 7}]}\n{not json at all\n\x00\x01\n')
    return path


KINDS: dict[str, Callable[[Path], Path]] = {
    "missing": _missing,
    "folder": _folder,
    "fifo": _fifo,
    "binary": _binary,
    "empty": _empty,
    "garbage": _garbage,
}

CASES: dict[str, list[str]] = {
    "generate --prompts": ["generate", "--model", "scripted", "--out", "{out}", "--prompts", "{bad}"],
    "generate --constitution": ["generate", "--model", "scripted", "--out", "{out}", "-c", "{bad}"],
    "generate --config": ["generate", "--model", "scripted", "--out", "{out}", "--config", "{bad}"],
    "label DIR": ["label", "{bad}", "--judge-model", "scripted"],
    "merge DIR": ["merge", "{bad}", "--out", "{out}"],
    "export DIR": ["export", "{bad}"],
    "review DIR": ["review", "{bad}"],
    "judge-eval FILE": ["judge-eval", "{bad}", "--model", "scripted"],
    "eval --redteam": ["eval", "--model", "scripted", "--out", "{out}", "--redteam", "{bad}"],
    "eval --benign": ["eval", "--model", "scripted", "--out", "{out}", "--benign", "{bad}"],
    "eval --config": ["eval", "--model", "scripted", "--out", "{out}", "--config", "{bad}"],
    "eval --compare": ["eval", "--compare", "{bad}", "{bad}"],
    "train dpo --data": ["train", "dpo", "--data", "{bad}", "--out", "{out}"],
    "train sft --config": ["train", "sft", "--data", "{bad}", "--out", "{out}", "--config", "{bad}"],
    "train grpo --prompts": ["train", "grpo", "--prompts", "{bad}", "--out", "{out}"],
    "principles validate": ["principles", "validate", "{bad}"],
    "principles show": ["principles", "show", "{bad}"],
    "principles import": ["principles", "import", "critique-revision", "{bad}", "-o", "{out}.yaml"],
}

FINE = {("generate --config", "empty"), ("eval --config", "empty")}
"""An empty run config sets no option: that is not bad input."""


class Hung(BaseException):
    """Raised in a case that blocked."""


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A case that blocks (reading a pipe, say) fails after 60 s instead of hanging the suite."""

    def expire(signum: int, frame: object) -> None:
        raise Hung("the command hung on bad input")  # not an OSError, which commands turn into a message

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_one_clear_message(tmp_path: Path, case: str, kind: str) -> None:
    if (case, kind) in FINE:
        pytest.skip("not bad input")
    bad = KINDS[kind](tmp_path)
    out = tmp_path / "out"
    argv = [a.format(bad=bad, out=out) for a in CASES[case]]
    result = CliRunner().invoke(cli, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case} with a {kind} path raised {result.exception!r}:\n{result.output}"
    )
    assert "Traceback" not in result.output
    assert result.exit_code in (1, 2), f"{case} with a {kind} path: exit {result.exit_code}\n{result.output}"
    message = result.output.strip()
    assert message, f"{case} with a {kind} path said nothing"
    assert bad.name in message or "Error: " in message or "Usage:" in message, message
    assert not (out / "trajectories.jsonl").exists()
    if kind == "folder":
        assert sorted(p.name for p in bad.iterdir()) == ["notes.txt"], f"{case} wrote into a folder that is not a run"
