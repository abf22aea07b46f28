"""The transformers backend, the pipeline and DPO training on a CUDA GPU (run where one is lent).

CI has no GPU, so this script is how a session that has one checks the CUDA
paths: a SmolLM2-135M-shaped model with random weights (the real tokenizer;
weights do not change the work done), loaded by ``HFBackend`` on ``cuda``:

1. greedy replies of a padded batch equal the replies of each chat alone
   (fp32 exactly; bf16 reported as a match rate, since padding changes the
   order of floating-point sums);
2. ``score`` of a batch equals ``score`` of each request alone (max |diff|);
3. seeded sampling repeats itself on the GPU;
4. ``cai generate`` rows/s at batch size 8 vs 64 (the ratio), peak GPU memory;
5. ``cai train dpo`` for a few steps on that run's pairs: finite loss, weights change.

    python bench/gpu_check.py --tokenizer DIR [--prompts 64] [--max-new-tokens 48]

``DIR`` holds the default model's config.json and tokenizer files (any
converted default-model folder, e.g. ~/.cache/cai/models/smollm2-*).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_model(tokenizer_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = json.loads((tokenizer_dir / "config.json").read_text())
    config.pop("quantization_config", None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config))
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the GPU paths")
    from engine.backends.base import SamplingParams, ScoreRequest
    from engine.backends.hf import HFBackend
    from engine.config import GenerateConfig
    from engine.generate import generate
    from engine.sources import load_prompts

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    work = Path(tempfile.mkdtemp())
    model_dir = build_model(args.tokenizer, work / "model")
    chats = [p.messages for p in load_prompts("mixed")[:12]]
    greedy = SamplingParams(max_new_tokens=24, temperature=0)
    for dtype in ("float32", "bfloat16"):
        backend = HFBackend(str(model_dir), batch_size=12, dtype=dtype, device="cuda")
        batched = [c.text for c in backend.generate(chats, greedy)]
        alone = [backend.generate([chat], greedy)[0].text for chat in chats]
        same = sum(a == b for a, b in zip(batched, alone, strict=True))
        requests = [ScoreRequest(chat, ("(A)", "(B)")) for chat in chats]
        together = backend.score(requests)
        single = [backend.score([r])[0] for r in requests]
        gap = max(abs(x - y) for a, b in zip(together, single, strict=True) for x, y in zip(a, b, strict=True))
        sampled = SamplingParams(max_new_tokens=24, temperature=0.8, seed=7)
        repeat = [c.text for c in backend.generate(chats, sampled)] == [
            c.text for c in backend.generate(chats, sampled)
        ]
        print(
            f"{dtype}: greedy batched == alone for {same}/{len(chats)} chats; "
            f"score max |batched - alone| {gap:.2e}; seeded sampling repeats: {repeat}"
        )
        del backend
        torch.cuda.empty_cache()

    rates = {}
    for batch in (8, 64):
        torch.cuda.reset_peak_memory_stats()
        config = GenerateConfig(
            out=work / f"run-{batch}",
            model=str(model_dir),
            prompts="mixed",
            limit=args.prompts,
            revisions=1,
            max_new_tokens=args.max_new_tokens,
            temperature=0,
            batch_size=batch,
            chunk_size=max(batch, 64),
            judge=False,
        )
        start = time.perf_counter()
        summary = generate(config, progress=False)
        rates[batch] = summary.rows / (time.perf_counter() - start)
        print(
            f"cai generate batch {batch}: {summary.rows} rows, {summary.pairs} pairs, {rates[batch]:.2f} rows/s, "
            f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        )
    print(f"rows/s batch 64 / batch 8: {rates[64] / rates[8]:.2f}x")

    out = work / "dpo"
    command = [
        sys.executable,
        "-m",
        "engine",
        "train",
        "dpo",
        "--data",
        str(work / "run-64"),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--max-steps",
        "5",
        "--batch-size",
        "4",
        "--logging-steps",
        "1",
        "--max-length",
        "256",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    print(f"cai train dpo (5 steps on cuda): exit {done.returncode}, {time.perf_counter() - start:.0f} s")
    print(done.stdout[-1500:], done.stderr[-1500:] if done.returncode else "")
    if done.returncode == 0:
        from transformers import AutoModelForCausalLM

        before = AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict()
        after = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
        changed = sum(not torch.equal(before[k].float(), after[k].float()) for k in before)
        finite = all(torch.isfinite(v.float()).all() for v in after.values())
        print(f"trained weights: {changed}/{len(before)} tensors changed, all finite: {finite}")


if __name__ == "__main__":
    main()
