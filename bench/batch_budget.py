"""`cai generate` on the embedded model over a grid of batch sizes and token budgets, prefix reuse on and off.

Issue 19, part 3: the transformers backend's defaults (``--batch-size``; ``max_decode_tokens``, the most padded
tokens one decoding batch holds; ``max_batch_tokens``, the most one prompt pass takes) should be the measured
optimum of the machine they run on. This runs one
job (the builtin red-team set, the default constitution, judge on, greedy) at every point of the grid, on one
model object, reuse on and off alternating at each point, and prints seconds per run and the fastest point of
each setting. Times are noisy on a busy machine: compare figures of one run, and use ``--repeats`` for medians.

    python bench/batch_budget.py [--prompts 32] [--revisions 1] [--max-new-tokens 64] [--batch-sizes 16 32]
        [--budgets 8192 32768] [--pass-tokens DEFAULT] [--repeats 1] [--dtype auto]

``--budgets`` are decoding budgets (``max_decode_tokens``); ``--pass-tokens`` sets ``max_batch_tokens``
for every point (default: the backend's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from prefix_reuse import redteam_job  # bench/, on the path when a bench script runs

from engine.backends import load_backend
from engine.backends.base import Backend, SamplingParams
from engine.backends.prefix import NO_TOKENS
from engine.generate import generate


def main() -> None:
    """Time every (batch size, budget, reuse) point and print the table and the fastest points."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--revisions", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--budgets", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--pass-tokens", type=int)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    backend: Any = load_backend("default", batch_size=max(args.batch_sizes), dtype=args.dtype)
    if args.pass_tokens:
        backend.max_batch_tokens = args.pass_tokens
    backend.generate([[{"role": "user", "content": "Hello"}]], SamplingParams(max_new_tokens=4))  # warm-up
    described = backend.describe()
    print(f"embedded model {json.dumps(described)}")

    def same(spec: str, **_: Any) -> Backend:
        return backend

    seconds: dict[tuple[int, int, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeats):
            for batch_size in args.batch_sizes:
                for budget in args.budgets:
                    for reuse in (True, False):
                        backend.prefix_reuse = reuse
                        backend.max_decode_tokens = budget
                        backend.prompt_tokens = NO_TOKENS
                        backend.heads.clear()  # each run starts with no heads kept
                        out = Path(tmp) / f"run-{n}-{batch_size}-{budget}-{reuse}"
                        config = redteam_job(out, args.prompts, args.revisions, args.max_new_tokens, batch_size)
                        start = time.perf_counter()
                        generate(config, progress=False, backends=same)
                        took = time.perf_counter() - start
                        seconds.setdefault((batch_size, budget, reuse), []).append(took)
                        setting = "on " if reuse else "off"
                        print(f"batch {batch_size:3d}, budget {budget:6d}, reuse {setting}: {took:7.1f} s", flush=True)
    median = {point: statistics.median(times) for point, times in seconds.items()}
    print(f"{args.prompts} prompts, {args.revisions} revisions, judge on, greedy, max {args.max_new_tokens} new tokens")
    for reuse in (True, False):
        points = {p: s for p, s in median.items() if p[2] == reuse}
        best = min(points, key=points.__getitem__)
        base = points.get((16, 8192, reuse))
        against = f"; {base / points[best]:.2f}x the batch 16, budget 8192 point" if base else ""
        setting = "on " if reuse else "off"
        print(f"reuse {setting}: fastest at batch {best[0]}, budget {best[1]}: {points[best]:.1f} s{against}")
    for batch_size in args.batch_sizes:
        for budget in args.budgets:
            on, off = median.get((batch_size, budget, True)), median.get((batch_size, budget, False))
            if on and off:
                print(f"batch {batch_size:3d}, budget {budget:6d}: reuse off / on {off / on:.2f}x")


if __name__ == "__main__":
    main()
