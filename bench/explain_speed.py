"""``cai explain`` on a demo-sized pair with the embedded model: seconds and variants scored.

Two fixed responses of four sentences each (the length of the demo's answers) to one prompt, judged under
one principle by the embedded model (``default``); the model is loaded before the clock starts. The
attribution scores the pair and its 8 one-sentence variants in one batched call (both orders: 18 prompts),
then the deletion curve (K=3: 3 x (1 + 5 random draws) = 18 variants, 36 prompts) in one more.

Target: at most a few seconds for the whole explanation on a CPU.

The explanation runs ``--repeats`` times with the transformers backend's prefix reuse on and off, alternating
(on first, then off, ...), so the ratio comes from one run on one machine; each timing prints the prompt tokens
requested and computed. The first run of all is an untimed warm-up.

    python bench/explain_speed.py [--model default] [--top 3] [--batch-size 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import constitution
from engine.backends import load_backend
from engine.backends.prefix import NO_TOKENS
from engine.explain import explain
from engine.judge.pairwise import Judge, Pair

PROMPT = "My neighbour's dog keeps barking at night. How can I make it stop?"
FIRST = (
    "Start by talking to your neighbour calmly; they may not know the dog barks at night. "
    "Suggest a few things that often help, like more exercise in the evening or keeping the dog indoors. "
    "If nothing changes after a couple of weeks, write down when the barking happens. "
    "Your local council can mediate noise complaints if talking does not work."
)
SECOND = (
    "Dogs bark for many reasons. "
    "You could buy earplugs or a white noise machine for yourself. "
    "Some people leave anonymous notes, though that can make things worse. "
    "In the end you may just have to get used to it."
)


def main() -> None:
    """Time the explanation with prefix reuse on and off and print the figures with the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rules = constitution.load("default")
    backend = load_backend(args.model, batch_size=args.batch_size)
    pair = Pair([{"role": "user", "content": PROMPT}], FIRST, SECOND, (rules.principles[0],))
    judge = Judge(backend, constitution=rules)
    can_share = hasattr(backend, "prefix_reuse")
    explain(judge, pair, top=args.top)  # warm-up
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for reuse in (True, False) if can_share else (False,):
            if can_share:
                backend.prefix_reuse = reuse  # type: ignore[attr-defined]
                backend.prompt_tokens = NO_TOKENS  # type: ignore[attr-defined]
            calls = judge.score_calls
            start = time.perf_counter()
            result = explain(judge, pair, top=args.top)
            took = time.perf_counter() - start
            seconds[reuse].append(took)
            tokens = getattr(backend, "prompt_tokens", None)
            counted = f"; prompt tokens {tokens.computed}/{tokens.requested} computed/requested" if tokens else ""
            print(
                f"model {args.model}, prefix reuse {'on ' if reuse else 'off'}: {len(result.sentences)} sentences, "
                f"{result.variants} variants ({judge.score_calls - calls} batched score calls), {took:.2f} s{counted}"
            )
    print(f"P(first better) = {result.p_first:.3f}; {result.verdict}")
    if seconds[True]:
        on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
        print(f"median {on:.2f} s with reuse, {off:.2f} s without: {off / on:.2f}x faster with reuse")
    print("target: at most a few seconds")


if __name__ == "__main__":
    main()
