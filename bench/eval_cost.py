"""Where the time of ``cai eval`` goes: generation against scoring, and the judge-robustness battery.

Runs one whole evaluation of a model (the embedded one by default) on N
red-team plus N benign held-out prompts, with the model itself as the judge,
and prints the stage timings ``evaluate`` records: answer generation, the
pointwise judge, the harm classifier, and the robustness battery (every
attack on ``--robustness`` answers, pointwise and pairwise). With
``--baseline`` the pairwise comparisons are timed too. Ratios, not absolute
seconds, are what carry over to another machine.

    python bench/eval_cost.py [--model default] [--prompts 100] [--max-new-tokens 64]
                              [--judge-principles 1] [--robustness 16] [--out runs/bench-eval]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from engine.config import EvalConfig
from engine.evaluate.run import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--baseline")
    parser.add_argument("--prompts", type=int, default=100, help="Prompts per set (each builtin set holds 75).")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--judge-principles", type=int, default=1)
    parser.add_argument("--robustness", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-eval"))
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    config = EvalConfig(
        out=args.out,
        models=[args.model],
        baseline=args.baseline,
        judge_model=args.model,
        limit=args.prompts,
        judge_principles=args.judge_principles,
        jailbreaks=0,
        counterfactual=0,
        robustness=args.robustness,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    start = time.perf_counter()
    summary = evaluate(config, progress=False)
    wall = time.perf_counter() - start
    t = summary.report.timings
    answers = summary.generated
    tokens = sum(m.generated_tokens for m in summary.report.models)
    red = sum(m.harmful_compliance.n for m in summary.report.models)
    benign = sum(m.over_refusal.n for m in summary.report.models)
    scoring = t.judge + t.classifier
    attacks = sum(row.n for row in summary.report.robustness)
    print(f"{answers} answers ({red} red-team + {benign} benign), {tokens} new tokens")
    print(f"{'stage':<22}{'seconds':>9}{'share':>8}{'per item':>12}")
    rows = [
        ("generation", t.generation, answers, "answer"),
        ("pointwise judge", t.judge, answers, "answer"),
        ("harm classifier", t.classifier, red, "red-team answer"),
        ("pairwise judge", t.pairwise, (red + benign) // 2 if args.baseline else 0, "pair"),
        ("robustness battery", t.robustness, attacks, "attacked answer"),
    ]
    for name, seconds, count, unit in rows:
        per = f"{seconds / count:.2f} s/{unit}" if count else "-"
        print(f"{name:<22}{seconds:>9.1f}{seconds / t.total:>8.0%}   {per}")
    print(f"{'total':<22}{t.total:>9.1f}{1:>8.0%}   (wall {wall:.1f} s; loading and report: the rest)")
    print(f"scoring / generation: {scoring / t.generation:.2f}x")
    print(f"robustness battery / (generation + scoring): {t.robustness / (t.generation + scoring):.2f}x")


if __name__ == "__main__":
    main()
