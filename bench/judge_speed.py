"""The judge's cost per pair: batched scoring against per-pair scoring and a generate-and-parse judge.

Three ways to label the same pairs (first comparisons of the shipped
judge-eval set, both orders, one principle each), on the same backend object:

``batched``   :meth:`Judge.compare`: every pair x order in ONE ``score`` call.
``per-pair``  the same scoring with one ``score`` call per pair and order.
``generate``  a judge that writes a short verdict (greedy, ``--verdict-tokens``
              new tokens, one batched ``generate`` call) and parses it.

The issue asks ``batched`` to be at least 5x faster per pair than ``generate``.
In the transformers backend ``score`` runs each prompt once and continues the
options from its cache, so scoring costs one prompt pass, the same prompt
work as the verdict's prefill; what scoring saves is the verdict's decoding
steps. Where prefill dominates (long judge prompts on a CPU), the two are
close; where decoding dominates (GPUs), scoring wins by the verdict length.

    python bench/judge_speed.py [--model default] [--pairs 8] [--verdict-tokens 8] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time

import constitution
from engine.audit.accuracy import comparison_principles
from engine.audit.comparisons import load_comparisons
from engine.backends import load_backend
from engine.backends.base import SamplingParams, ScoreRequest
from engine.judge import OPTIONS, Judge, Pair, read_verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--verdict-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    rules = constitution.load("default")
    items = load_comparisons("builtin")[: args.pairs]
    principles = comparison_principles(items, rules, 1, 0)
    pairs = [Pair(i.conversation, i.response_a, i.response_b, p) for i, p in zip(items, principles, strict=True)]
    backend = load_backend(args.model, batch_size=args.batch_size)
    judge = Judge(backend, constitution=rules)
    chats = [
        judge.prompt(p.principles[0], p.conversation, a, b)
        for p in pairs
        for a, b in ((p.first, p.second), (p.second, p.first))
    ]
    backend.score([ScoreRequest(chats[0], OPTIONS)])  # warm-up

    start = time.perf_counter()
    judge.compare(pairs)
    batched = time.perf_counter() - start

    start = time.perf_counter()
    for chat in chats:
        backend.score([ScoreRequest(chat, OPTIONS)])
    per_pair = time.perf_counter() - start

    start = time.perf_counter()
    replies = backend.generate(chats, SamplingParams(max_new_tokens=args.verdict_tokens, temperature=0))
    generated = time.perf_counter() - start
    read = sum(read_verdict(r.text)[0] is not None or r.text.strip()[:3] in ("(A)", "(B)") for r in replies)

    n = len(pairs)
    print(f"{n} pairs x 2 orders on {backend.name} (batch size {args.batch_size})")
    print(f"  batched score   {batched:8.2f} s  {batched / n:6.2f} s/pair")
    print(f"  per-pair score  {per_pair:8.2f} s  {per_pair / n:6.2f} s/pair  ({per_pair / batched:.2f}x batched)")
    print(
        f"  generate+parse  {generated:8.2f} s  {generated / n:6.2f} s/pair  ({generated / batched:.2f}x batched; "
        f"{read} of {len(replies)} verdicts readable)"
    )


if __name__ == "__main__":
    main()
