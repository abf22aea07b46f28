"""The engine's own cost, measured with the scripted backend (no model).

Targets of the issue:
- at least 1,000 trajectories per second with 2 revisions;
- peak memory for 100,000 prompts at most 1.5x that for 1,000 (nothing grows with the run).

Each size runs in a fresh subprocess so peak RSS is its own. The whole of
``cai generate``'s work is timed: prompt loading, the loop, streaming rows to
disk, building and saving the dataset and the card.

    python bench/engine_overhead.py [--small 1000] [--large 100000] [--throughput 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(n: int, chunk: int, judge: bool) -> None:
    """Generate for n synthetic prompts; print seconds and peak RSS as JSON."""
    from engine.config import GenerateConfig
    from engine.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        with prompts.open("w") as handle:
            for i in range(n):
                handle.write(json.dumps({"id": f"p{i}", "prompt": f"Synthetic question {i}: how does thing {i} work?"}))
                handle.write("\n")
        config = GenerateConfig(
            out=Path(tmp) / "run",
            model="scripted",
            prompts=str(prompts),
            revisions=2,
            stop_early=False,
            chunk_size=chunk,
            judge=judge,
        )
        start = time.perf_counter()
        summary = generate(config, progress=False)
        seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "rows": summary.rows, "seconds": seconds, "peak_mib": peak_mib}))


def measure(n: int, chunk: int, judge: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(n), "--chunk", str(chunk)] + ["--judge"] * judge
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=256, help="prompts in flight (--chunk-size)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--judge", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.chunk, args.judge)
        return
    print("scripted backend, 2 revisions, no early stop, whole `cai generate` (load, loop, stream, dataset, card)")
    for judge in (False, True):
        small = measure(args.small, args.chunk, judge)
        large = measure(args.large, args.chunk, judge)
        print("\nwith the judge (labels.jsonl, all candidate pairs, both orders)" if judge else "\nwithout the judge")
        print(f"{'prompts':>8} {'seconds':>8} {'traj/s':>8} {'peak MiB':>9}")
        for r in (small, large):
            print(f"{int(r['n']):>8} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>8.0f} {r['peak_mib']:>9.0f}")
        rate = large["rows"] / large["seconds"]
        ratio = large["peak_mib"] / small["peak_mib"]
        verdict = {True: "met", False: "NOT met"}
        n_large, n_small = int(large["n"]), int(small["n"])
        print(f"throughput at {n_large}: {rate:,.0f} trajectories/s (target >= 1,000): {verdict[rate >= 1000]}")
        print(f"peak memory, {n_large} vs {n_small}: {ratio:.2f}x (target <= 1.5x): {verdict[ratio <= 1.5]}")


if __name__ == "__main__":
    main()
