"""``cai explain`` on a demo-sized pair with the embedded model: seconds and variants scored.

Two fixed responses of four sentences each (the length of the demo's answers) to one prompt, judged under
one principle by the embedded model (``default``); the model is loaded before the clock starts. The
attribution scores the pair and its 8 one-sentence variants in one batched call (both orders: 18 prompts),
then the deletion curve (K=3: 3 x (1 + 5 random draws) = 18 variants, 36 prompts) in one more.

Target: at most a few seconds for the whole explanation on a CPU.

    python bench/explain_speed.py [--model default] [--top 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time

import constitution
from engine.backends import load_backend
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
    """Time one explanation and print it with the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    rules = constitution.load("default")
    backend = load_backend(args.model, batch_size=args.batch_size)
    pair = Pair([{"role": "user", "content": PROMPT}], FIRST, SECOND, (rules.principles[0],))
    judge = Judge(backend, constitution=rules)
    start = time.perf_counter()
    result = explain(judge, pair, top=args.top)
    seconds = time.perf_counter() - start
    sentences = len(result.sentences)
    print(
        f"model {args.model}: {sentences} sentences, {result.variants} variants scored "
        f"({judge.score_calls} batched score calls), {seconds:.2f} s"
    )
    print(f"P(first better) = {result.p_first:.3f}; {result.verdict}")
    print("target: at most a few seconds")


if __name__ == "__main__":
    main()
