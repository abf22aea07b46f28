"""A run's output folder: manifest, streamed trajectories, and resuming.

``trajectories.jsonl`` (and the judge's ``labels.jsonl``, see
:mod:`engine.judge.store`) is a :class:`JsonlLog`: appended to as rows finish, one
complete line per row, flushed and fsynced. A run killed at any moment (even
``kill -9``) leaves at most one torn last line, which the next run cuts off;
rows are identified by prompt id, so a rerun skips what is done and never
writes a row twice.

One process at a time writes a run folder: every command that writes one
(generate, label, merge, the rebuilds of review and export) holds
:func:`run_lock` on it, and a second writer is refused with the holder's PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from engine.errors import UserError
from engine.records import PromptTokenCount, RunManifest, Trajectory, prompt_digest

MANIFEST = "run.json"
TRAJECTORIES = "trajectories.jsonl"
FOREIGN = (
    "{path}: folder is not empty and holds no cai run; cai writes only into a new or empty folder "
    "or one of its own runs: choose another --out"
)
LOCK = ".cai.lock"
"""The lock file of a run folder (see :func:`run_lock`); it stays after the lock is released."""


class RunDirError(UserError):
    """The output folder cannot be used as asked; the message says why and what to do."""


R = TypeVar("R", bound=BaseModel)


class JsonlLog(Generic[R]):
    """An append-only JSON-lines file of pydantic records that survives being killed mid-write."""

    def __init__(self, path: Path, record: type[R], what: str) -> None:
        self.path = path
        self.record = record
        self.what = what

    def rows(self, *, repair: bool = False) -> Iterator[R]:
        """The records written so far.

        Args:
            repair: Cut a torn last line (left by a killed run) off the file.

        Raises:
            RunDirError: A line other than the last is not a valid record.
        """
        if not self.path.exists():
            return
        if repair:
            self.repair()
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield self.record.model_validate_json(line)
                except (ValidationError, ValueError) as exc:
                    raise RunDirError(
                        f"{self.path}:{number}: not a valid {self.what} row ({invalid_reason(exc)}); the file was "
                        "changed by something other than cai: restore it, or move it aside and run again"
                    ) from None

    def append(self, rows: Iterable[R]) -> None:
        """Write finished rows durably: complete lines, flushed and fsynced."""
        text = "".join(row.model_dump_json() + "\n" for row in rows)
        if not text:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def repair(self) -> None:
        """Cut a torn last line (left by a killed run) off the file, or finish a whole last row's line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        tail = data[keep:]
        try:
            json.loads(tail)
            complete = True
        except ValueError:
            complete = False
        with self.path.open("r+b") as handle:
            if complete:  # the row was written whole, only its newline is missing
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n")
            else:
                handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())


def invalid_reason(exc: ValueError) -> str:
    """Why a line is not a valid record, in one short phrase (the first field pydantic refused, say)."""
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else str(error["msg"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class RunDir:
    """An output folder being written by one run."""

    def __init__(self, path: Path, manifest: RunManifest) -> None:
        self.path = path
        self.manifest = manifest
        self.trajectories = path / TRAJECTORIES
        self.log = JsonlLog(self.trajectories, Trajectory, "trajectory")
        self.replaced: list[str] = []
        """What ``--force`` changed (see :meth:`open`); empty when the settings match."""
        self.before: RunManifest | None = None
        """The folder's manifest before ``--force`` replaced its settings."""

    @classmethod
    def open(cls, path: Path, manifest: RunManifest, *, force: bool = False) -> RunDir:
        """Check that a run with these settings may write to ``path`` (nothing is written yet).

        With ``force``, a run made with other settings may go on under the new
        ones: the returned run's :attr:`replaced` then lists what changed, and
        its manifest keeps the old settings in ``superseded`` (their rows stay).

        Raises:
            RunDirError: The folder holds another run (different constitution,
                models or settings) and ``force`` is False, or files that are
                not a cai run (never written into, ``force`` or not).
        """
        run = cls(path, manifest)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a folder")
        existing = path / MANIFEST
        if existing.exists():
            try:
                before = RunManifest.model_validate_json(existing.read_text(encoding="utf-8"))
            except (ValidationError, ValueError):
                if not force:
                    raise RunDirError(
                        f"{existing}: not a manifest this version of cai can read; pass --force to replace it "
                        "(the rows in the folder are kept)"
                    ) from None
                run.replaced = [f"{MANIFEST}: unreadable, replaced"]
                return run
            diffs = before.differences(manifest)
            if diffs and not force:
                raise RunDirError(
                    f"{path} holds a run made with other settings:\n  "
                    + "\n  ".join(diffs)
                    + "\nUse another --out, or --force to add rows made with the new settings"
                    + " (each row records its own; the old rows stay)."
                )
            if diffs:
                history = [*before.superseded, before.model_copy(update={"superseded": []})]
                run.manifest = manifest.model_copy(update={"superseded": history})
                run.replaced = diffs
                run.before = before
            else:
                kept = {
                    "superseded": before.superseded,
                    "generation": manifest.generation or before.generation,
                    "prompt_tokens": manifest.prompt_tokens or before.prompt_tokens,
                }
                run.manifest = manifest.model_copy(update=kept)
        elif holds_files(path):
            raise RunDirError(FOREIGN.format(path=path))
        return run

    @staticmethod
    def read_manifest(path: Path) -> RunManifest:
        """The manifest of the run in ``path``.

        Raises:
            RunDirError: ``path`` holds no run this version of cai can read.
        """
        found = path / MANIFEST
        if not path.is_dir():
            raise RunDirError(f"{path}: no such folder")
        if not found.exists():
            raise RunDirError(f"{path}: holds no cai run (no {MANIFEST}); make one with `cai generate --out {path}`")
        try:
            return RunManifest.model_validate_json(found.read_text(encoding="utf-8"))
        except (ValidationError, ValueError):
            raise RunDirError(f"{found}: not a manifest this version of cai can read") from None

    def begin(self) -> None:
        """Create the folder and record the manifest (after the models have loaded)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / MANIFEST, self.manifest.model_dump_json(indent=2) + "\n")

    def count_prompt_tokens(self, counted: PromptTokenCount) -> None:
        """Add ``counted`` to the manifest's prompt tokens and write ``run.json`` again."""
        known = self.manifest.prompt_tokens
        self.manifest = self.manifest.model_copy(
            update={"prompt_tokens": counted if known is None else known + counted}
        )
        self.begin()

    def done_ids(self) -> set[str]:
        """Ids of the rows already written, after cutting off a torn last line."""
        return {row.id for row in self.rows(repair=True)}

    def prompt_digests(self) -> dict[str, str]:
        """Each written row's id with :func:`~engine.records.prompt_digest` of its prompt (a torn last line cut off).

        Its keys are :meth:`done_ids`, read in the same pass.
        """
        return {row.id: prompt_digest(row.prompt) for row in self.rows(repair=True)}

    def rows(self, *, repair: bool = False) -> Iterator[Trajectory]:
        """The trajectories written so far (``repair`` cuts a torn last line off first)."""
        return self.log.rows(repair=repair)

    def append(self, rows: Iterable[Trajectory]) -> None:
        """Write finished rows durably: complete lines, flushed and fsynced."""
        self.log.append(rows)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def holds_files(path: Path) -> bool:
    """Whether ``path`` is a folder holding anything besides cai's lock file."""
    return path.is_dir() and any(entry.name != LOCK for entry in path.iterdir())


_held: dict[Path, int] = {}
"""Run folders this process holds the lock of, with how many times it entered :func:`run_lock` on each."""


@contextmanager
def run_lock(path: Path, command: str) -> Iterator[None]:
    """Hold the exclusive write lock of run folder ``path`` (created if missing) while the block runs.

    The lock is an ``flock`` on ``path/.cai.lock``, which records the holder's
    PID and command for the message a second writer gets. The kernel releases
    it when the holder exits, however it exits, so a lock left by a dead
    process is simply taken over. A process may take the lock it holds again.
    A folder this call created and that holds nothing but the lock file when
    the block ends is removed again.

    Raises:
        RunDirError: Another process holds the lock, or the folder cannot be written.
    """
    key = path.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a folder")
    if holds_files(path) and not (path / MANIFEST).exists():
        raise RunDirError(FOREIGN.format(path=path))
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write here: {exc.strerror or exc}; choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            raise RunDirError(
                f"{path} is being written by another cai process ({holder}); wait for it to finish or stop it, "
                "then run this again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()}, `{command}`, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            if created and not holds_files(path):
                (path / LOCK).unlink(missing_ok=True)
                with suppress(OSError):
                    path.rmdir()
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
