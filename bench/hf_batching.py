"""What length-sorted batching buys over one-prompt-at-a-time generation, and bf16 vs fp32.

On the embedded default model (SmolLM2-135M-Instruct), greedy, N short chat
prompts of varied length, ``max_new_tokens`` new tokens each:

(a) one prompt at a time with ``model.generate`` (no padding, batch of one);
(b) ``HFBackend.generate`` on all prompts at once, for several batch sizes,
    in fp32, and in bf16 for the largest batch size.

Rows/s, the speed-up over (a) (fp32), and how many greedy replies equal (a)'s
are printed. Times vary
between machines and with other load on the machine (2 busy cores make every
figure noisy), so compare ratios from one run.

    python bench/hf_batching.py [--prompts 32] [--max-new-tokens 32] [--batch-sizes 8 16 32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from engine.backends.base import Chat, Completion, SamplingParams
from engine.backends.default_model import default_model_path
from engine.backends.hf import HFBackend

TOPICS = [
    "the moon",
    "bread",
    "a river that floods every spring and the farmers who depend on it",
    "chess",
    "why the sky is blue",
    "a short history of the printing press and how it changed how people shared ideas",
    "volcanoes",
    "honeybees",
]
FORMS = [
    "Write one sentence about {}.",
    "Give me a fun fact about {}.",
    "Explain {} to a ten-year-old in a few words.",
    "What is the most surprising thing about {}? Answer briefly, please, because I only have a minute.",
]


def prompts(n: int) -> list[Chat]:
    return [[{"role": "user", "content": FORMS[i % len(FORMS)].format(TOPICS[i % len(TOPICS)])}] for i in range(n)]


def one_at_a_time(backend: HFBackend, chats: list[Chat], max_new_tokens: int) -> tuple[float, list[Completion]]:
    """Seconds and replies of plain ``model.generate`` on each prompt alone."""
    start = time.perf_counter()
    replies = []
    with torch.inference_mode():
        for chat in chats:
            ids = torch.tensor([backend.encode([backend.render(chat)])[0]], device=backend.device)
            out = backend.model.generate(  # type: ignore[operator]
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
            replies.append(backend._completion(out[0, ids.shape[1] :].cpu(), ()))  # same counting as HFBackend
    return time.perf_counter() - start, replies


def batched(
    backend: HFBackend, chats: list[Chat], max_new_tokens: int, batch_size: int
) -> tuple[float, list[Completion]]:
    backend.batch_size = batch_size
    start = time.perf_counter()
    out = backend.generate(chats, SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--bf16-batch-sizes", type=int, nargs="*", default=[32], help="(b) in bf16 (slow on AVX2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    path = default_model_path()
    chats = prompts(args.prompts)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"SmolLM2-135M-Instruct, {args.prompts} prompts, greedy, max_new_tokens={args.max_new_tokens}, "
        f"device={args.device}, torch threads={torch.get_num_threads()}, load average {load:.1f}"
    )
    print(
        f"{'dtype':9} {'mode':22} {'seconds':>8} {'rows/s':>7} {'new tok/s':>9} {'vs (a)':>7} {'same text as (a)':>16}"
    )
    base_s = float("nan")
    base: list[Completion] = []
    fp32: dict[int, float] = {}

    def report(dtype: str, mode: str, seconds: float, replies: list[Completion], extra: str = "") -> None:
        rate = len(chats) / seconds
        tokens = sum(c.tokens for c in replies)
        same = sum(a.text == b.text for a, b in zip(base, replies, strict=True))
        print(
            f"{dtype:9} {mode:22} {seconds:8.1f} {rate:7.2f} {tokens / seconds:9.1f} {base_s / seconds:6.2f}x "
            f"{same:>9}/{len(chats)}{extra}",
            flush=True,
        )

    backend = HFBackend(str(path), batch_size=max(args.batch_sizes), dtype="float32", device=args.device)
    batched(backend, chats[:2], 2, 2)  # warm-up: first-call allocations and template compilation
    base_s, base = one_at_a_time(backend, chats, args.max_new_tokens)
    report("float32", "(a) one at a time", base_s, base)
    for size in args.batch_sizes:
        seconds, replies = batched(backend, chats, args.max_new_tokens, size)
        fp32[size] = seconds
        report("float32", f"(b) HFBackend bs={size}", seconds, replies)
    if args.bf16_batch_sizes:
        del backend
        backend = HFBackend(str(path), batch_size=max(args.bf16_batch_sizes), dtype="bfloat16", device=args.device)
        batched(backend, chats[:2], 2, 2)
        for size in args.bf16_batch_sizes:
            seconds, replies = batched(backend, chats, args.max_new_tokens, size)
            extra = f"  (bf16 / fp32 speed {fp32[size] / seconds:.2f}x)" if size in fp32 else ""
            report("bfloat16", f"(b) HFBackend bs={size}", seconds, replies, extra)


if __name__ == "__main__":
    main()
