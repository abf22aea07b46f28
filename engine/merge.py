"""``cai merge``: combine the folders of several runs (the shards of a split) into one run and dataset.

The runs must have been made with the same constitution, models, sampling,
rounds, seed and, when judged, the same judge and judge settings; anything
else is refused with a message naming the field and the two folders. Shards
of one prompt source must come from one split (one ``N``), each shard once;
a missing shard is refused unless ``allow_partial`` (then the merged card
says which are missing). A prompt id found in two runs is refused unless both
rows are the same (timings aside), in which case the first is kept.

The merged folder is an ordinary run folder: ``trajectories.jsonl`` and
``labels.jsonl`` (the runs' rows, in the order the runs are given), a manifest
without a shard that lists the merged runs (``merged_from``), the
``constitution.yaml`` and the dataset and card, built the way ``cai generate``
builds them; ``cai label`` and ``cai train`` take it like any run. Rows are
streamed: memory holds the ids seen so far (and a 16-byte digest of each
row), never the rows. Nothing in the merged runs' folders is changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from engine.dataset.of_run import build_dataset
from engine.errors import UserError
from engine.judge import LABEL_MANIFEST, LABELS, LabelStats, LabelStore
from engine.records import Label, LabelManifest, MergedRun, RunManifest, Shard, Trajectory, missing_shards
from engine.run_constitution import CONSTITUTION_COPY
from engine.rundir import (
    FOREIGN,
    MANIFEST,
    TRAJECTORIES,
    JsonlLog,
    RunDir,
    RunDirError,
    atomic_write,
    holds_files,
    run_lock,
)

KEPT_APART = ("shard", "prompts", "merged_from", "superseded", "generation", "prompt_tokens")
"""Manifest fields that may differ between the runs of a merge."""
WRITTEN = (MANIFEST, TRAJECTORIES, LABELS, LABEL_MANIFEST, CONSTITUTION_COPY)


class MergeError(UserError):
    """The runs cannot be merged as asked; the message says why and what to do."""


@dataclass(frozen=True)
class MergeSummary:
    """What a merge did, for the closing message."""

    out: Path
    dataset: Path
    runs: list[MergedRun]
    rows: int
    duplicates: int
    """Rows found in more than one run, the same in each, written once."""
    pairs: int
    missing: list[str] = field(default_factory=list)
    """Shards (``I/N of PROMPTS``) of the merged splits that were not given (only with ``allow_partial``)."""
    labels: LabelStats | None = None
    seconds: float = 0.0
    replaced: bool = False
    """``out`` held a run, replaced with ``force``."""


@dataclass
class _Source:
    path: Path
    manifest: RunManifest
    labels: LabelManifest | None


def merge(dirs: Sequence[Path], out: Path, *, allow_partial: bool = False, force: bool = False) -> MergeSummary:
    """Merge run folders ``dirs`` into a new run folder ``out`` and build its dataset and card.

    Args:
        dirs: Run folders made by ``cai generate`` (or by an earlier merge).
        out: The merged run's folder: new or empty, or replaced with ``force``.
        allow_partial: Merge even when shards of a split are missing.
        force: Replace the run files in ``out`` if it holds any.

    Raises:
        MergeError: The runs differ in a setting, overlap, or a shard is missing.
        RunDirError: A folder holds no readable run, or ``out`` cannot be written.
    """
    start = time.perf_counter()
    sources = [_read(Path(d)) for d in dirs]
    if not sources:
        raise MergeError("nothing to merge: give the run folders (e.g. runs/shard-*)")
    _check_distinct(sources, out)
    _check_same_settings(sources)
    judged = _check_same_judge(sources)
    entries = _check_splits(sources)
    missing = missing_shards(entries)
    if missing and not allow_partial:
        raise MergeError(
            f"shard{'s' * (len(missing) != 1)} {', '.join(missing)} missing; "
            "merge every shard of the split, or pass --allow-partial to merge these anyway"
        )
    with run_lock(out, "cai merge"):
        return _merge(sources, out, force, judged, missing, start)


def _merge(
    sources: list[_Source], out: Path, force: bool, judged: LabelManifest | None, missing: list[str], start: float
) -> MergeSummary:
    replaced = _prepare(out, force)

    seen: dict[str, bytes] = {}
    where: dict[str, int] = {}  # id -> index of the source it was taken from, to name both in an overlap
    duplicates = 0
    counts: list[int] = []
    tmp_rows, tmp_labels = out / f".{TRAJECTORIES}.merge", out / f".{LABELS}.merge"
    try:
        with (
            tmp_rows.open("w", encoding="utf-8") as rows_out,
            tmp_labels.open("w", encoding="utf-8") if judged is not None else nullcontext() as labels_out,
        ):
            for number, source in enumerate(sources):
                repeated: set[str] = set()
                taken = 0
                for row in RunDir(source.path, source.manifest).rows():
                    digest = _digest(row)
                    before = seen.get(row.id)
                    if before is not None:
                        if before != digest:
                            earlier = sources[where[row.id]].path
                            raise MergeError(
                                f"prompt {row.id!r} is in {earlier} and in {source.path} with different rows: "
                                "these runs overlap; merge runs of disjoint prompts (the shards of one split)"
                            )
                        repeated.add(row.id)
                        duplicates += 1
                        continue
                    seen[row.id] = digest
                    where[row.id] = number
                    rows_out.write(row.model_dump_json() + "\n")
                    taken += 1
                counts.append(taken)
                if labels_out is not None:
                    for item in JsonlLog(source.path / LABELS, Label, "label").rows():
                        if item.id not in repeated:
                            labels_out.write(item.model_dump_json() + "\n")
            _sync(rows_out)
            if labels_out is not None:
                _sync(labels_out)
    except BaseException as exc:
        for tmp in (tmp_rows, tmp_labels):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, RunDirError):
            raise RunDirError(
                f"{exc}\nIf that run was stopped mid-write, run its command again to finish it, then merge."
            ) from None
        raise

    runs = _merged_runs(sources, counts)
    first = sources[0].manifest
    prompts = list(dict.fromkeys(s.manifest.prompts for s in sources))
    manifest = first.model_copy(
        update={
            "shard": None,
            "prompts": " + ".join(prompts),
            "merged_from": runs,
            "generation": None,
            "prompt_tokens": None,
        }
    )
    os.replace(tmp_rows, out / TRAJECTORIES)
    labels = None
    if judged is not None:
        os.replace(tmp_labels, out / LABELS)
        labels = LabelStore(out, judged)
        atomic_write(out / LABEL_MANIFEST, judged.model_dump_json(indent=2) + "\n")
    run = RunDir(out, manifest)
    run.begin()
    shutil.copyfile(_constitution_copy(sources), out / CONSTITUTION_COPY)
    path, sizes, stats, label_stats = build_dataset(run, labels)
    return MergeSummary(
        out=out,
        dataset=path,
        runs=runs,
        rows=stats.rows,
        duplicates=duplicates,
        pairs=sizes["preferences"],
        missing=missing,
        labels=label_stats,
        seconds=time.perf_counter() - start,
        replaced=replaced,
    )


def _read(path: Path) -> _Source:
    manifest = RunDir.read_manifest(path)
    if manifest.superseded:
        raise MergeError(
            f"{path} holds rows made with different settings (its settings were replaced with --force); "
            "merge only runs made with one set of settings"
        )
    labels = None
    found = path / LABEL_MANIFEST
    if found.exists():
        try:
            labels = LabelManifest.model_validate_json(found.read_text(encoding="utf-8"))
        except (ValidationError, ValueError):
            raise RunDirError(f"{found}: not a label manifest this version of cai can read") from None
    return _Source(path, manifest, labels)


def _check_distinct(sources: list[_Source], out: Path) -> None:
    given: dict[Path, Path] = {}
    target = out.resolve()
    for source in sources:
        real = source.path.resolve()
        if real == target:
            raise MergeError(f"--out {out} is one of the runs to merge; write the merge to a new folder")
        if real in given:
            raise MergeError(f"{source.path} is given twice (also as {given[real]})")
        given[real] = source.path


def _check_same_settings(sources: list[_Source]) -> None:
    """Every run made with the first run's constitution, models, sampling, rounds and seed."""
    base = sources[0]
    mine = _comparable(base.manifest)
    for other in sources[1:]:
        theirs = _comparable(other.manifest)
        diffs = [
            f"{key}: {_show(mine[key])} in {base.path} vs {_show(theirs[key])} in {other.path}"
            for key in mine
            if mine[key] != theirs[key]
        ]
        if diffs:
            raise MergeError(
                "cannot merge runs made with different settings:\n  "
                + "\n  ".join(diffs)
                + "\nMerge only runs (shards) made with the same constitution, models and settings."
            )


def _check_same_judge(sources: list[_Source]) -> LabelManifest | None:
    """The runs' common label manifest, None when none was judged; refused when they differ."""
    base = sources[0]
    for other in sources[1:]:
        if (base.labels is None) != (other.labels is None):
            judged, bare = (base, other) if other.labels is None else (other, base)
            raise MergeError(
                f"{judged.path} is labelled by the judge and {bare.path} is not: label it with the same "
                f"judge settings (`cai label {bare.path} ...`), or merge runs made with --no-judge"
            )
        if base.labels is not None and other.labels is not None:
            diffs = [d.replace("(in the folder)", f"in {base.path}") for d in base.labels.differences(other.labels)]
            diffs = [d.replace("(now)", f"in {other.path}") for d in diffs]
            if diffs:
                raise MergeError(
                    "cannot merge runs labelled by different judges or judge settings:\n  "
                    + "\n  ".join(diffs)
                    + "\nRelabel them alike with `cai label DIR ... --force`, then merge."
                )
    return base.labels


def _check_splits(sources: list[_Source]) -> list[MergedRun]:
    """The runs as merge entries (earlier merges expanded into their runs), each split checked for consistency."""
    entries = []
    for source in sources:
        if source.manifest.merged_from:
            entries += [(source.path, run) for run in source.manifest.merged_from]
        else:
            run = MergedRun(path=str(source.path), prompts=source.manifest.prompts, shard=source.manifest.shard, rows=0)
            entries.append((source.path, run))
    splits: dict[str, dict[Shard, Path]] = {}
    for path, run in entries:
        if run.shard is None:
            continue
        shard = Shard.parse(run.shard)
        split = splits.setdefault(run.prompts, {})
        counts = {s.count for s in split}
        if counts and shard.count not in counts:
            other = next(iter(split))
            raise MergeError(
                f"{path} is shard {shard} and {split[other]} shard {other} of the prompts {run.prompts!r}: "
                "shards of different splits overlap; merge the shards of one split (one N)"
            )
        if shard in split:
            raise MergeError(f"shard {shard} of the prompts {run.prompts!r} is given twice: {split[shard]} and {path}")
        split[shard] = path
    return [run for _, run in entries]


def _merged_runs(sources: list[_Source], counts: list[int]) -> list[MergedRun]:
    runs: list[MergedRun] = []
    for source, taken in zip(sources, counts, strict=True):
        if source.manifest.merged_from:
            runs += source.manifest.merged_from
        else:
            m = source.manifest
            runs.append(MergedRun(path=str(source.path), prompts=m.prompts, shard=m.shard, rows=taken))
    return runs


def _comparable(manifest: RunManifest) -> dict[str, Any]:
    return manifest.model_dump(exclude=set(KEPT_APART))


def _show(value: Any) -> str:
    if isinstance(value, dict) and "hash" in value:
        return f"{value['id']} {value['hash'][:12]}"
    return str(value)


def _digest(row: Trajectory) -> bytes:
    """What makes two rows of one prompt the same (timings aside: they differ between any two runs)."""
    return hashlib.sha256(row.model_dump_json(exclude={"timings"}).encode("utf-8")).digest()[:16]


def _prepare(out: Path, force: bool) -> bool:
    """``out`` may take the merge: new, empty, or (with ``force``) holding a cai run, whose files go; True then."""
    if not holds_files(out):
        return False
    if not (out / MANIFEST).exists():
        raise RunDirError(FOREIGN.format(path=out))
    if not force:
        raise RunDirError(f"{out}: holds a run already; choose another --out, or --force to replace that run")
    for name in WRITTEN:  # cai's own files; a person's decisions (reviews.jsonl) stay
        (out / name).unlink(missing_ok=True)
    return True


def _constitution_copy(sources: list[_Source]) -> Path:
    for source in sources:
        if (source.path / CONSTITUTION_COPY).exists():
            return source.path / CONSTITUTION_COPY
    raise RunDirError(f"none of the runs holds its {CONSTITUTION_COPY}; rerun one of them with `cai generate`")


def _sync(handle: IO[str]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
