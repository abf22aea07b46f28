"""``cai train`` on a run whose review decisions never reached the dataset (the server died before rebuilding it).

The decisions are appended to ``reviews.jsonl`` exactly as the review server
appends them, the dataset is left as it was, and the training data is then
loaded the way ``cai train`` loads it.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datasets import load_from_disk

from engine.cli import cli
from engine.records import REVIEWS
from engine.review.decisions import DecisionLog
from engine.review.pairs import PairIndex
from engine.reviewed import decisions_pending
from engine.rundir import LOCK
from engine.train import TrainError, preference_data, sft_data
from tests.test_review import make_run


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("reviewed") / "run")


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(template, out)
    return out


def review(run_dir: Path, **actions: str) -> None:
    """Record decisions as the review server does (``{pair id: action}``), without rebuilding the dataset."""
    index, log = PairIndex(run_dir), DecisionLog(run_dir)
    for pair, action in actions.items():
        entry = index.by_id[pair]
        current, _ = log.get(pair)
        log.decide(
            pair,
            action,  # type: ignore[arg-type]
            revision=current.revision if current else 0,
            shown=(entry.chosen_from, entry.rejected_from),
            texts=index.texts(entry),
        )


def judged(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in map(json.loads, (run_dir / "labels.jsonl").read_text().splitlines())}


def test_dpo_data_leaves_out_dropped_pairs_and_swaps_flipped_ones(run_dir: Path) -> None:
    dropped, flipped = [e.id for e in PairIndex(run_dir).entries[:2]]
    before = {row["id"]: row for row in load_from_disk(str(run_dir / "dataset"))["preferences"]}
    assert dropped in before and flipped in before
    review(run_dir, **{dropped: "drop", flipped: "flip"})
    assert decisions_pending(run_dir)

    data = preference_data(run_dir)

    pairs = {row["id"]: row for row in data.dataset}
    assert dropped not in pairs
    assert len(pairs) == len(before) - 1
    swapped = pairs[flipped]
    assert (swapped["chosen"], swapped["rejected"]) == (before[flipped]["rejected"], before[flipped]["chosen"])
    label = judged(run_dir)[flipped]
    assert (swapped["chosen_from"], swapped["rejected_from"]) == (label["rejected_from"], label["chosen_from"])
    assert swapped["human_label"] == "flipped" and swapped["chosen_prob"] == 1.0
    assert any("dataset rebuilt with 2 review decisions (0 accepted, 1 flipped, 1 dropped)" in n for n in data.notes)
    assert not decisions_pending(run_dir)
    again = preference_data(run_dir)  # up to date now: read as it is
    assert not any("rebuilt" in note for note in again.notes)


def test_the_dataset_folder_itself_gets_the_decisions_too(run_dir: Path) -> None:
    dropped = PairIndex(run_dir).entries[0].id
    review(run_dir, **{dropped: "drop"})
    assert dropped not in set(preference_data(run_dir / "dataset").dataset["id"])
    assert dropped not in set(load_from_disk(str(run_dir / "dataset"))["preferences"]["id"])


def test_sft_and_grpo_data_rebuild_too(run_dir: Path) -> None:
    dropped = PairIndex(run_dir).entries[0].id
    review(run_dir, **{dropped: "drop"})
    data = sft_data(run_dir)  # what `cai train sft` and `cai train grpo --data` read
    assert any("dataset rebuilt with 1 review decisions" in n for n in data.notes)
    assert dropped not in set(load_from_disk(str(run_dir / "dataset"))["preferences"]["id"])


def hold_lock(run_dir: Path) -> subprocess.Popen[str]:
    """Another process holding the run folder's write lock (as a running `cai label` does)."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.pwrite(fd, b'PID 1, `cai label`', 0)\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir / LOCK)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    ready, _, _ = select.select([holder.stdout], [], [], 30)
    assert ready and holder.stdout.readline().strip() == "locked"
    return holder


def test_decisions_that_cannot_be_applied_stop_training_with_one_line(run_dir: Path, tmp_path: Path) -> None:
    review(run_dir, **{PairIndex(run_dir).entries[0].id: "drop"})
    holder = hold_lock(run_dir)
    try:
        with pytest.raises(TrainError, match=r"review decisions cannot be applied.*another cai process"):
            preference_data(run_dir)
        result = CliRunner().invoke(
            cli, ["train", "dpo", "--data", str(run_dir), "--out", str(tmp_path / "model"), "--model", "scripted"]
        )
    finally:
        holder.kill()
        holder.wait(10)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another cai process" in errors[0], result.output
    assert "Traceback" not in result.output


def test_a_corrupt_decision_stops_training_naming_the_line(run_dir: Path) -> None:
    review(run_dir, **{PairIndex(run_dir).entries[0].id: "drop"})
    with (run_dir / REVIEWS).open("a") as handle:
        handle.write("not a decision\n")
    with pytest.raises(TrainError, match=r"reviews\.jsonl:2: not a review decision"):
        preference_data(run_dir)
