"""The judge's labels of a run, stored next to its trajectories.

``labels.json`` records who judged and how (:class:`~engine.records.LabelManifest`);
``labels.jsonl`` holds one :class:`~engine.records.Label` per trajectory, streamed
and resumable exactly like ``trajectories.jsonl``. Labels are kept apart from
the trajectories so that ``cai label DIR`` can judge a finished run again with
another judge without regenerating anything: the older labels are then moved
aside (``labels.1.jsonl``...), never overwritten.

The dataset builder joins labels to trajectories by row id with
:meth:`LabelStore.join`, reading both files side by side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from constitution import Constitution
from engine.judge.pairs import judge_trajectories
from engine.judge.panel import PairJudge
from engine.judge.stats import LabelTally
from engine.records.labels import Label, LabelManifest
from engine.records.trajectory import Trajectory
from engine.rundir import JsonlLog, RunDirError, atomic_write

LABELS = "labels.jsonl"
LABEL_MANIFEST = "labels.json"


class LabelStore:
    """The labels of one run folder."""

    def __init__(self, path: Path, manifest: LabelManifest) -> None:
        self.path = path
        self.manifest = manifest
        self.log = JsonlLog(path / LABELS, Label, "label")

    @classmethod
    def open(cls, path: Path, manifest: LabelManifest, *, force: bool = False) -> LabelStore:
        """Check that labels made under ``manifest`` may go into ``path`` (nothing is written yet).

        Raises:
            RunDirError: The folder holds labels from another judge or settings and ``force`` is False.
        """
        store = cls(path, manifest)
        before = store.existing()
        if before is not None and not force:
            diffs = before.differences(manifest)
            if diffs:
                raise RunDirError(
                    f"{path} holds labels made by another judge or with other settings:\n  "
                    + "\n  ".join(diffs)
                    + "\nPass --force to judge the run again (the old labels are kept beside, as labels.N.jsonl)."
                )
        return store

    @classmethod
    def of_run(cls, path: Path) -> LabelStore | None:
        """The labels already in a run folder, to read (None when the run is not labelled).

        Raises:
            RunDirError: ``labels.json`` is there but unreadable.
        """
        found = path / LABEL_MANIFEST
        if not found.exists():
            return None
        try:
            return cls(path, LabelManifest.model_validate_json(found.read_text(encoding="utf-8")))
        except (ValidationError, ValueError):
            raise RunDirError(f"{found}: not a label manifest this version of cai can read") from None

    def existing(self) -> LabelManifest | None:
        """The manifest of the labels already in the folder, if any."""
        found = self.path / LABEL_MANIFEST
        if not found.exists():
            return None
        try:
            return LabelManifest.model_validate_json(found.read_text(encoding="utf-8"))
        except (ValidationError, ValueError):
            raise RunDirError(f"{found}: not a label manifest this version of cai can read; pass --force") from None

    def begin(self) -> None:
        """Record the manifest; labels from a different judge or settings are moved aside first."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            before = self.existing()
        except RunDirError:
            before = None
            self._archive()
        if before is not None and before.differences(self.manifest):
            self._archive()
        elif before is not None and self.manifest.check is None:
            self.manifest = self.manifest.model_copy(update={"check": before.check})  # the same judge's earlier check
        atomic_write(self.path / LABEL_MANIFEST, self.manifest.model_dump_json(indent=2) + "\n")

    def _archive(self) -> None:
        number = 1
        while (self.path / f"labels.{number}.jsonl").exists() or (self.path / f"labels.{number}.json").exists():
            number += 1
        for name, suffix in ((LABELS, "jsonl"), (LABEL_MANIFEST, "json")):
            if (self.path / name).exists():
                os.replace(self.path / name, self.path / f"labels.{number}.{suffix}")

    def done_ids(self) -> set[str]:
        """Ids of the rows labelled already (after cutting off a torn last line)."""
        return {label.id for label in self.rows(repair=True)}

    def drop_orphans(self, rows: Container[str]) -> int:
        """Remove the labels of rows the run no longer holds, and all but the last label of a row labelled twice.

        A row whose line was cut off by a crash is made again on resume and
        judged again; its old label must not count beside the new one. The
        file is rewritten in one step, and only when something is removed.

        Returns:
            How many labels were removed.
        """
        path = self.log.path
        if not path.exists():
            return 0
        self.log.repair()
        with path.open(encoding="utf-8") as handle:
            ids = [_label_id(line, path, number) for number, line in enumerate(handle, 1)]
        last = {row_id: number for number, row_id in enumerate(ids) if row_id is not None}
        keep = {number for row_id, number in last.items() if row_id in rows}
        removed = sum(row_id is not None for row_id in ids) - len(keep)
        if not removed:
            return 0
        tmp = path.with_name(f".{path.name}.tmp")
        with path.open(encoding="utf-8") as source, tmp.open("w", encoding="utf-8") as target:
            target.writelines(line for number, line in enumerate(source) if number in keep)
            target.flush()
            os.fsync(target.fileno())
        os.replace(tmp, path)
        return removed

    def rows(self, *, repair: bool = False) -> Iterator[Label]:
        """The labels written so far."""
        return self.log.rows(repair=repair)

    def append(self, labels: Iterable[Label]) -> None:
        """Write labels durably."""
        self.log.append(labels)

    def join(self, trajectories: Iterable[Trajectory], tally: LabelTally) -> Iterator[tuple[Trajectory, Label | None]]:
        """Each trajectory with its label (None when it has none), counting every label into ``tally``.

        Labels are written in the order of the trajectories they judge, so the
        two files are read side by side and nothing accumulates; labels found
        out of order wait in a small dict until their trajectory comes.
        """
        waiting: dict[str, Label] = {}
        labels = self.rows()
        for t in trajectories:
            found = waiting.pop(t.id, None)
            if found is None:
                for label in labels:
                    if label.id == t.id:
                        found = label
                        break
                    waiting[label.id] = label
            if found is None:
                yield t, None
            else:
                tally.add(found)  # only labels of rows the run holds count, each row once
                yield t, found


def _label_id(line: str, path: Path, number: int) -> str | None:
    if not line.strip():
        return None
    try:
        return str(json.loads(line)["id"])
    except (ValueError, KeyError, TypeError):
        raise RunDirError(
            f"{path}:{number}: not a valid label row; move the file aside to label the run again"
        ) from None


def label_rows(
    store: LabelStore,
    trajectories: Iterable[Trajectory],
    judge: PairJudge,
    constitution: Constitution,
    *,
    labelled: Container[str],
    chunk_size: int,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Judge the trajectories not in ``labelled`` (:meth:`LabelStore.done_ids`), a chunk at a time,
    each chunk written when done.

    Returns:
        How many trajectories were labelled now.
    """
    count = 0
    chunk: list[Trajectory] = []

    def flush() -> None:
        nonlocal count
        store.append(judge_trajectories(judge, chunk, constitution))
        count += len(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
        chunk.clear()

    for t in trajectories:
        if t.id in labelled:
            continue
        chunk.append(t)
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    return count
