"""A run's output folder: manifest, streamed trajectories, and resuming.

``trajectories.jsonl`` (and the judge's ``labels.jsonl``, see
:mod:`engine.labels`) is a :class:`JsonlLog`: appended to as rows finish, one
complete line per row, flushed and fsynced. A run killed at any moment (even
``kill -9``) leaves at most one torn last line, which the next run cuts off;
rows are identified by prompt id, so a rerun skips what is done and never
writes a row twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from engine.records import RunManifest, Trajectory

MANIFEST = "run.json"
TRAJECTORIES = "trajectories.jsonl"


class RunDirError(Exception):
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
            self._cut_torn_tail()
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield self.record.model_validate_json(line)
                except (ValidationError, ValueError) as exc:
                    raise RunDirError(f"{self.path}:{number}: not a valid {self.what} row: {exc}") from None

    def append(self, rows: Iterable[R]) -> None:
        """Write finished rows durably: complete lines, flushed and fsynced."""
        text = "".join(row.model_dump_json() + "\n" for row in rows)
        if not text:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def _cut_torn_tail(self) -> None:
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


class RunDir:
    """An output folder being written by one run."""

    def __init__(self, path: Path, manifest: RunManifest) -> None:
        self.path = path
        self.manifest = manifest
        self.trajectories = path / TRAJECTORIES
        self.log = JsonlLog(self.trajectories, Trajectory, "trajectory")

    @classmethod
    def open(cls, path: Path, manifest: RunManifest, *, force: bool = False) -> RunDir:
        """Check that a run with these settings may write to ``path`` (nothing is written yet).

        Raises:
            RunDirError: The folder holds another run (different constitution,
                models or settings) or unrelated files, and ``force`` is False.
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
                        f"{existing}: not a manifest this version of cai can read; pass --force"
                    ) from None
                before = manifest
            diffs = before.differences(manifest)
            if diffs and not force:
                raise RunDirError(
                    f"{path} holds a run made with other settings:\n  "
                    + "\n  ".join(diffs)
                    + "\nUse another --out, or --force to add rows made with the new settings"
                    + " (each row records its own)."
                )
        elif path.exists() and any(path.iterdir()) and not force:
            raise RunDirError(f"{path}: folder is not empty and holds no cai run; choose another --out or pass --force")
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

    def done_ids(self) -> set[str]:
        """Ids of the rows already written, after cutting off a torn last line."""
        return {row.id for row in self.rows(repair=True)}

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
