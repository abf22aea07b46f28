"""What the default judge gate adds to the README's demo ``cai generate`` (target: at most 15%).

Runs the demo's generate command (embedded model, 8 mixed prompts, one
revision, 48 new tokens) with ``--judge-check none`` and with the default
builtin check, alternating, each in a fresh process and a fresh folder, and
prints the wall time of each and the ratio of the medians. The model is
converted once before timing, so neither side pays for it.

    python bench/judge_gate.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO = ["--prompts", "mixed", "--limit", "8", "--revisions", "1", "--max-new-tokens", "48"]


def run(out: Path, check: str) -> float:
    command = [sys.executable, "-m", "engine", "generate", "--out", str(out), *DEMO, "--judge-check", check]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from engine.backends.default_model import default_model_path

    default_model_path()  # converts the embedded model once, before anything is timed
    times: dict[str, list[float]] = {"none": [], "builtin": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for check in ("none", "builtin"):
                seconds = run(Path(tmp) / f"{check}-{i}", check)
                times[check].append(seconds)
                print(f"repeat {i + 1}, --judge-check {check}: {seconds:.1f} s", flush=True)
    base, gated = statistics.median(times["none"]), statistics.median(times["builtin"])
    print(f"median without the check {base:.1f} s, with the builtin check {gated:.1f} s")
    print(f"the check adds {100 * (gated / base - 1):.1f}% to the demo's cai generate (target: at most 15%)")


if __name__ == "__main__":
    main()
