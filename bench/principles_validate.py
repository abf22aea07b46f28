"""How fast `cai principles validate` answers, relative to a bare Python start.

The issue's target: validating the shipped files answers "well under a second"
so it can run in an editor or a pre-commit hook. Times vary between machines,
so the figures that matter are the ratios to the interpreter's own start-up,
measured in the same run.

    python bench/principles_validate.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from engine.cli import main; main()"]
LIBRARIES = "import pydantic models, yaml, click"


def timed(command: list[str], repeat: int) -> float:
    """Median wall time of a command, in seconds (one warm-up run first)."""
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (median is reported)")
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        LIBRARIES: [sys.executable, "-c", "from pydantic import BaseModel, ValidationError; import yaml, click"],
        "cai --help": [*CLI, "--help"],
        "cai principles validate principles/": [*CLI, "principles", "validate", "principles/"],
        "cai principles show default --render": [*CLI, "principles", "show", "default", "--render"],
    }
    results = {name: timed(cmd, args.repeat) for name, cmd in cases.items()}
    base = results["python -c pass"]
    print(f"median of {args.repeat} runs each, python {sys.version.split()[0]}")
    print(f"{'command':<40} {'seconds':>8} {'x python start':>15}")
    for name, seconds in results.items():
        print(f"{name:<40} {seconds:8.3f} {seconds / base:15.1f}")
    validate = results["cai principles validate principles/"]
    floor = results[LIBRARIES]
    print(f"\nvalidate costs {validate - floor:.3f} s above importing its libraries")
    print(f"target 'well under a second': {'met' if validate < 0.5 else 'NOT met'} ({validate:.3f} s)")


if __name__ == "__main__":
    main()
