"""`cai generate` against the obvious sequential loop, on the embedded model.

Target of the issue: with 32 prompts, 1 revision and the same max tokens,
`cai generate` makes at least 6x more rows per minute than a loop that takes
one prompt at a time through answer, critique and revision with
``model.generate``. Both sides use the same model object (same dtype), the
same prompts, templates and principle per row, greedy decoding, and no early
stop, so they do the same work; generated-token counts are printed to show it.

    python bench/generate_speed.py [--prompts 32] [--max-new-tokens 32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import constitution
from engine.backends import load_backend
from engine.backends.base import SamplingParams
from engine.backends.hf import HFBackend
from engine.config import GenerateConfig
from engine.critique import clean_revision
from engine.generate import generate
from engine.judge.principles import round_principle
from engine.prompts import critique_prompt, revision_prompt
from engine.sources import load_prompts


def sequential(backend: HFBackend, prompts: str, n: int, max_new_tokens: int, seed: int) -> tuple[float, int]:
    """One prompt at a time: answer, critique, revision, each a plain ``model.generate``."""
    rules = constitution.load("default")
    tokenizer, model = backend.tokenizer, backend.model
    tokens = 0

    def reply(chat: list[dict[str, str]]) -> str:
        nonlocal tokens
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {k: v.to(model.device) for k, v in ids.items()}
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new = out[0, ids["input_ids"].shape[1] :]
        tokens += int(new.shape[0])
        return str(tokenizer.decode(new, skip_special_tokens=True)).strip()

    start = time.perf_counter()
    for item in load_prompts(prompts, limit=n):
        principle = round_principle(rules, seed, item.id, 1)
        answer = reply(item.messages)
        critique = reply(critique_prompt(principle, item.messages, answer, rules))
        clean_revision(reply(revision_prompt(principle, item.messages, answer, critique, rules)))
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--source", default="mixed", help="prompt set")
    args = parser.parse_args()

    backend = load_backend("default", batch_size=args.batch_size)
    assert isinstance(backend, HFBackend)
    config = dict(
        model="default",
        prompts=args.source,
        limit=args.prompts,
        revisions=1,
        stop_early=False,
        temperature=0.0,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        chunk_size=args.prompts,
    )
    engine_tokens = 0

    def counted(*_: object, **__: object) -> HFBackend:
        return backend

    original = backend.generate

    def generate_and_count(chats, params: SamplingParams):  # type: ignore[no-untyped-def]
        nonlocal engine_tokens
        out = original(chats, params)
        engine_tokens += sum(c.tokens for c in out)
        return out

    backend.generate = generate_and_count  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(GenerateConfig.model_validate({**config, "out": Path(tmp) / "run"}), progress=False, backends=counted)
        engine_seconds = time.perf_counter() - start
    seq_seconds, seq_tokens = sequential(backend, args.source, args.prompts, args.max_new_tokens, seed=0)

    n = args.prompts
    print(f"embedded model {backend.describe()}")
    print(f"{n} prompts, 1 revision, max {args.max_new_tokens} new tokens, greedy, no early stop")
    print(f"{'':<28} {'seconds':>8} {'rows/min':>9} {'gen tokens':>11}")
    print(f"{'sequential model.generate':<28} {seq_seconds:>8.1f} {n / seq_seconds * 60:>9.1f} {seq_tokens:>11}")
    label = f"cai generate (batch {args.batch_size})"
    print(f"{label:<28} {engine_seconds:>8.1f} {n / engine_seconds * 60:>9.1f} {engine_tokens:>11}")
    speedup = seq_seconds / engine_seconds
    print(f"\nspeed-up: {speedup:.1f}x rows/min (target >= 6x): {'met' if speedup >= 6 else 'NOT met'}")


if __name__ == "__main__":
    main()
