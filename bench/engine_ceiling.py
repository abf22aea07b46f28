"""`cai generate --no-judge` against its ceiling: raw batched ``model.generate`` fed the same rendered prompts.

Target of issue 19: the engine's generated tokens/s at least 0.9x of the ceiling at the same batch size (the
engine's own work costs under 10%), and above 1.0x with prefix reuse.

What runs (the embedded model, the engine's dtype unless ``--dtype``; one model object for everything):

1. ``engine.generate.generate`` with no judge, greedy, no early stop, ``--revisions`` rounds, with the
   transformers backend's prefix reuse off, then on. Every ``generate`` call the engine makes is recorded
   (its chats and sampling), with the tokens it generated; the clock covers the whole run (prompt reading,
   the loop, writing rows, building the dataset).
2. The ceiling: each recorded call replayed as plain ``model.generate`` on the same rendered prompts, sorted
   by length and cut into batches of ``--batch-size`` (left-padded, greedy, the same ``max_new_tokens``, no
   stop strings), timed alone; tokens up to each row's first end-of-text token.

Tokens/s is the fair figure (a stop string may end the engine's replies sooner than the raw ones).

    python bench/engine_ceiling.py [--prompts 32] [--revisions 1] [--max-new-tokens 48] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine.backends import load_backend
from engine.backends.base import Chat, Completion, SamplingParams
from engine.backends.hf import HFBackend
from engine.backends.prefix import NO_TOKENS, length_batches
from engine.config import GenerateConfig
from engine.generate import generate


def engine_run(backend: HFBackend, args: argparse.Namespace, out: Path) -> tuple[float, int, list[Any]]:
    """Seconds, generated tokens and the recorded calls of one engine run."""
    calls: list[tuple[list[Chat], SamplingParams]] = []
    tokens = 0
    original = backend.generate

    def recorded(chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        nonlocal tokens
        found = original(chats, params)
        calls.append((list(chats), params))
        tokens += sum(c.tokens for c in found)
        return found

    backend.generate = recorded  # type: ignore[method-assign]
    config = GenerateConfig(
        out=out,
        prompts=args.source,
        limit=args.prompts,
        revisions=args.revisions,
        stop_early=False,
        temperature=0,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        chunk_size=args.prompts,
        judge=False,
    )
    try:
        start = time.perf_counter()
        generate(config, progress=False, backends=lambda spec, **_: backend)
        return time.perf_counter() - start, tokens, calls
    finally:
        del backend.generate  # the class's method again


def ceiling(backend: HFBackend, calls: list[tuple[list[Chat], SamplingParams]], batch_size: int) -> tuple[float, int]:
    """Seconds and tokens of raw batched ``model.generate`` over the recorded calls' rendered prompts."""
    seconds, tokens = 0.0, 0
    tok = backend.tokenizer
    ends = backend._ends
    for chats, params in calls:
        prompts = backend.encode([backend.render(chat) for chat in chats])
        for batch in length_batches([len(p) for p in prompts], batch_size, 1 << 30):
            ids, mask = backend._left_pad([prompts[i] for i in batch])
            start = time.perf_counter()
            with torch.inference_mode():
                out = backend.model.generate(  # type: ignore[operator]
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=params.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            seconds += time.perf_counter() - start
            for row in out[:, ids.shape[1] :].cpu():
                ended = torch.isin(row, ends).nonzero()
                tokens += int(ended[0, 0]) if len(ended) else int(row.shape[0])
    return seconds, tokens


def main() -> None:
    """Run the engine (reuse off, on) and the ceiling; print tokens/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--revisions", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--source", default="redteam")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    backend = load_backend("default", batch_size=args.batch_size, dtype=args.dtype)
    assert isinstance(backend, HFBackend)
    backend.generate([[{"role": "user", "content": "Hello"}]], SamplingParams(max_new_tokens=4))  # warm-up
    print(f"embedded model {json.dumps(backend.describe())}")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for reuse in (False, True):
            backend.prefix_reuse = reuse
            backend.prompt_tokens = NO_TOKENS
            backend.heads.clear()
            seconds, tokens, calls = engine_run(backend, args, Path(tmp) / f"run-{reuse}")
            name = f"engine, prefix reuse {'on' if reuse else 'off'}"
            rates[name] = tokens / seconds
            counted = backend.prompt_tokens
            print(
                f"{name:<28} {seconds:7.1f} s {tokens:6d} tokens {tokens / seconds:7.1f} tokens/s; prompt tokens "
                f"{counted.computed} computed of {counted.requested}"
            )
    seconds, tokens = ceiling(backend, calls, args.batch_size)
    rate = tokens / seconds
    print(f"{'raw batched model.generate':<28} {seconds:7.1f} s {tokens:6d} tokens {rate:7.1f} tokens/s")
    for name, value in rates.items():
        print(f"{name} / ceiling: {value / rate:.2f}x")
    print("targets: reuse off >= 0.9x of the ceiling; reuse on > 1.0x")


if __name__ == "__main__":
    main()
