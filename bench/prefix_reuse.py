"""`cai generate` with the transformers backend's prefix reuse on and off: prompt tokens computed, time, outputs.

Target of issue 19: on the builtin red-team set, the default constitution, 64 prompts, 2 revisions, judge on:
prompt tokens computed at most 60% of those requested, `cai generate` at least 1.5x faster than with reuse off,
the same outputs under greedy decoding.

One model object (the embedded model, the engine's dtype unless ``--dtype``) serves both runs; its ``prefix_reuse``
switch is flipped between them, its token counter reset and its kept heads dropped. The runs alternate on, off, on,
off ... (``--repeats`` each) in fresh folders, after one untimed warm-up call, so both see the same machine. Each
run's time is split into decoding (the model's ``generate`` calls: each row's last prompt token and every new one,
and the whole prompts of a batch without heads that fits one prompt pass, which ``generate`` runs itself: short
first-answer prompts with reuse off) and the rest (prompt passes, scoring, the engine); reuse saves only the rest,
so the split bounds the ratio: ``(decoding + rest off) / (decoding + rest on)`` would reach ``rest off / rest on``
only if decoding were free. Outputs are compared field by field (first answers, critiques, revisions, final answers,
the judge's probabilities): under greedy decoding in fp32 they should be equal; in bf16 the shared prefix is
computed in a different batch shape, so rounding may flip a token now and then (counted, not hidden).

    python bench/prefix_reuse.py [--prompts 64] [--revisions 2] [--max-new-tokens 64] [--dtype auto] [--repeats 1]
        [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.backends import load_backend
from engine.backends.base import Backend, SamplingParams
from engine.backends.prefix import NO_TOKENS
from engine.config import GenerateConfig
from engine.generate import generate
from engine.rundir import RunDir


def redteam_job(out: Path, prompts: int, revisions: int, max_new_tokens: int, batch_size: int) -> GenerateConfig:
    """The benches' job: the builtin red-team set, the default constitution, every round run, judge on, greedy."""
    return GenerateConfig(
        out=out,
        prompts="redteam",
        limit=prompts,
        revisions=revisions,
        stop_early=False,
        temperature=0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        judge_check="none",
    )


def outputs(run: Path) -> dict[str, Any]:
    """What a run produced, per prompt id: the texts of every step and the judge's verdict (P to 3 places)."""
    found: dict[str, Any] = {}
    for line in (run / "trajectories.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        found[row["id"]] = [row["initial"], [(r["critique"], r["revision"]) for r in row["rounds"]], row["final"]]
    labels = run / "labels.jsonl"
    if labels.is_file():
        for line in labels.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            prob = row.get("chosen_prob")
            verdict = [
                row["status"],
                row["chosen_from"],
                row["rejected_from"],
                prob if prob is None else round(prob, 3),
            ]
            found.setdefault(row["id"], []).append(verdict)
    return found


def main() -> None:
    """Time both settings and print tokens, seconds, the ratio and the output agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--revisions", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="copy the run folders here (to compare them with other runs)")
    args = parser.parse_args()
    backend = load_backend("default", batch_size=args.batch_size, dtype=args.dtype)
    backend.generate([[{"role": "user", "content": "Hello"}]], SamplingParams(max_new_tokens=4))  # warm-up
    print(f"embedded model {json.dumps(backend.describe())}")

    def same(spec: str, **_: Any) -> Backend:
        return backend

    decoding = [0.0]
    model_generate = backend.model.generate  # type: ignore[attr-defined]

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return model_generate(*args, **kwargs)
        finally:
            decoding[0] += time.perf_counter() - start

    backend.model.generate = timed_generate  # type: ignore[attr-defined]
    seconds: dict[bool, list[float]] = {True: [], False: []}
    decoded: dict[bool, list[float]] = {True: [], False: []}
    results: dict[bool, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeats):
            for reuse in (True, False):
                backend.prefix_reuse = reuse  # type: ignore[attr-defined]
                backend.prompt_tokens = NO_TOKENS  # type: ignore[attr-defined]
                backend.heads.clear()  # type: ignore[attr-defined]  # each run starts with no heads kept
                out = Path(tmp) / f"run-{n}-{reuse}"
                config = redteam_job(out, args.prompts, args.revisions, args.max_new_tokens, args.batch_size)
                decoding[0] = 0.0
                start = time.perf_counter()
                summary = generate(config, progress=False, backends=same)
                took = time.perf_counter() - start
                seconds[reuse].append(took)
                decoded[reuse].append(decoding[0])
                results[reuse] = outputs(out)
                if args.keep:
                    shutil.copytree(out, args.keep / out.name, dirs_exist_ok=True)
                tokens = summary.prompt_tokens
                assert tokens is not None and tokens == RunDir.read_manifest(out).prompt_tokens
                print(
                    f"prefix reuse {'on ' if reuse else 'off'}: {took:7.1f} s; prompt tokens computed "
                    f"{tokens.computed} of {tokens.requested} requested ({tokens.computed / tokens.requested:.0%}); "
                    f"decoding {decoding[0]:.1f} s, the rest {took - decoding[0]:.1f} s"
                )
    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
    dec_on, dec_off = statistics.median(decoded[True]), statistics.median(decoded[False])
    rest = {r: statistics.median(t - d for t, d in zip(seconds[r], decoded[r], strict=True)) for r in (True, False)}
    print(
        f"the rest (all but decoding): {rest[False]:.1f} s off vs {rest[True]:.1f} s on, "
        f"{rest[False] / rest[True]:.2f}x; decoding {dec_off:.1f} s off vs {dec_on:.1f} s on "
        f"({dec_on / on:.0%} of the run with reuse)"
    )
    differ = sorted(k for k in results[True] if results[True][k] != results[False].get(k))
    print(
        f"{args.prompts} prompts, {args.revisions} revisions, judge on, greedy, max {args.max_new_tokens} new tokens: "
        f"{off / on:.2f}x faster with reuse (median {on:.1f} s vs {off:.1f} s)"
    )
    print(f"outputs: {len(results[True]) - len(differ)} of {len(results[True])} prompts identical; differ: {differ}")
    print("targets: computed <= 60% of requested; >= 1.5x faster; identical outputs under greedy decoding (fp32)")


if __name__ == "__main__":
    main()
