"""`cai generate` through llama.cpp's llama-server against the in-process `hf` backend, and the client's overhead.

Target of the issue: same model, same prompts, one run: the throughput of
`cai generate` through the llama.cpp server vs through the in-process `hf`
backend, and through the server with 1 vs 8 requests in flight, as ratios.
The client must not be the bottleneck: with N requests in flight
``OpenAIBackend.generate`` reaches at least 90% of the tokens/s that a bare
thread pool posting the same requests reaches against the same server.

What runs (the model is the embedded SmolLM2-135M-Instruct: its GGUF file for
the server, the converted Hugging Face folder for `hf`):

1. `cai generate` as the CLI runs it (``engine.generate.generate``: answer,
   1 critique, 1 revision per prompt, no early stop, greedy, no judge, so
   every run does the same 3 generations per prompt) through
   (a) the `hf` `default` backend in-process (the dtype the engine picks),
   (b) `openai:smollm2@URL` with 8 requests in flight (``--batch-size 8``),
   (c) the same with 1 in flight. Each server run gets a freshly started
   server, so none profits from another's prompt cache. Backends are loaded
   and warmed up (one short request) before the clock starts. The `hf`
   backend and the server may stop at EOS at different points, so tokens/s
   (from ``Completion.tokens``) is the fair figure; rows/s and the token
   counts are printed beside it.
2. Client overhead, for N in (1, 8): the first-turn (answer) requests of the
   first ``--requests`` prompts of the same set, as the chat-completions
   bodies ``OpenAIBackend.generate`` sends (same max_tokens, temperature 0,
   top_p, seed), posted by ``OpenAIBackend.generate`` with N in flight and by
   a bare ``ThreadPoolExecutor(N)`` + ``httpx.Client`` summing
   ``usage.completion_tokens``, against one server. The runs alternate bare,
   client, bare, ..., bare after one untimed pass (so every timed run finds
   the server's slots and prompt cache in the same state: warm, which makes
   the server as fast as it gets and the client's share as large as it
   gets), and each client run is compared with the mean of the bare runs
   just before and after it (a linear drift of the machine cancels out).

The defaults take about 6 minutes on 2 CPU cores, most of it prompt
processing of the critique and revision prompts (300-650 tokens each) and
the `hf` run.

Absolute figures depend on the machine and on anything else running on it:
compare the ratios of one run.

    python bench/serve_throughput.py [--prompts 8] [--requests 16] [--max-new-tokens 32] [--source mixed]
                                     [--in-flight 8] [--hf-batch-size 8] [--reps 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import torch

from engine.backends import load_backend
from engine.backends.base import Backend, BackendError, Chat, Completion, SamplingParams
from engine.backends.default_model import embedded_gguf
from engine.backends.llama_server import find_server, running_server, server_command
from engine.config import GenerateConfig
from engine.generate import generate
from engine.sources import load_prompts

MODEL = "smollm2"
"""The name the server answers to (``--alias``)."""
REQUEST_TIMEOUT_S = 120.0
TARGET = 0.90
WARM_UP: Chat = [{"role": "user", "content": "Say hello."}]


# ---------------------------------------------------------------- cai generate


@dataclass(frozen=True)
class PipelineRun:
    label: str
    in_flight: str
    seconds: float
    rows: int
    generations: int
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def run_pipeline(
    label: str, in_flight: str, backend: Backend, spec: str, args: argparse.Namespace, out: Path
) -> PipelineRun:
    """`cai generate --revisions 1 --no-stop-early --no-judge --temperature 0` with an already loaded backend."""
    backend.generate([WARM_UP], SamplingParams(max_new_tokens=4, temperature=0))
    counts = [0, 0]  # generations, tokens
    original = backend.generate

    def generate_and_count(chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        replies = original(chats, params)
        counts[0] += len(replies)
        counts[1] += sum(reply.tokens for reply in replies)
        return replies

    backend.generate = generate_and_count  # type: ignore[method-assign]
    config = GenerateConfig(
        out=out,
        model=spec,
        prompts=args.source,
        limit=args.prompts,
        revisions=1,
        stop_early=False,
        temperature=0.0,
        max_new_tokens=args.max_new_tokens,
        batch_size=backend_batch(backend),
        judge=False,
    )
    try:
        start = time.perf_counter()
        summary = generate(config, progress=False, backends=lambda *_, **__: backend)
        seconds = time.perf_counter() - start
    finally:
        backend.generate = original  # type: ignore[method-assign]
    return PipelineRun(label, in_flight, seconds, summary.rows, counts[0], counts[1])


def backend_batch(backend: Backend) -> int:
    described = backend.describe()
    return int(described.get("max_concurrency") or described.get("batch_size") or 16)


# ---------------------------------------------------------------- client overhead


def chat_body(chat: Chat, params: SamplingParams) -> dict[str, Any]:
    """The JSON body ``OpenAIBackend.generate`` posts to chat/completions for one chat (no stop strings)."""
    return {
        "model": MODEL,
        "messages": list(chat),
        "n": 1,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
    }


@dataclass(frozen=True)
class Timed:
    kind: str
    seconds: float
    tokens: int
    cpu_seconds: float
    """CPU time this process (the client) used: what it took from the server on a machine with few cores."""
    prompt_evaluated: int | None = None
    """Prompt tokens the server computed (llama-server's ``timings.prompt_n``; the rest came from its cache)."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def bare_pool(client: httpx.Client, bodies: Sequence[dict[str, Any]], in_flight: int) -> Timed:
    """POST every body with a plain thread pool; tokens are the sum of ``usage.completion_tokens``."""

    def post(body: dict[str, Any]) -> tuple[int, int | None]:
        response = client.post("chat/completions", json=body)
        response.raise_for_status()
        reply = response.json()
        timings = reply.get("timings")
        return int(reply["usage"]["completion_tokens"]), timings.get("prompt_n") if isinstance(timings, dict) else None

    cpu, start = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        replies = list(pool.map(post, bodies))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    evaluated = [n for _, n in replies]
    prompt_evaluated = None if None in evaluated else sum(n for n in evaluated if n is not None)
    return Timed("bare", seconds, sum(tokens for tokens, _ in replies), cpu, prompt_evaluated)


def through_backend(backend: Backend, chats: Sequence[Chat], params: SamplingParams) -> Timed:
    cpu, start = time.process_time(), time.perf_counter()
    replies = backend.generate(chats, params)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Timed("client", seconds, sum(reply.tokens for reply in replies), cpu)


@dataclass(frozen=True)
class Overhead:
    in_flight: int
    runs: list[Timed]
    ratios: list[float]
    """Each client run's tokens/s over the mean tokens/s of the bare runs before and after it."""


def client_overhead(
    url: str, chats: Sequence[Chat], params: SamplingParams, in_flight: int, reps: int, bodies: Sequence[dict[str, Any]]
) -> Overhead:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    backend = load_backend(f"openai:{MODEL}@{url}", batch_size=in_flight)
    try:
        with httpx.Client(base_url=url + "/", timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
            # untimed: one whole pass leaves the server's slots and prompt cache as every timed run finds them,
            # and one request per connection opens the connections of the backend
            bare_pool(client, bodies, in_flight)
            backend.generate(chats[: min(in_flight, len(chats))], params)
            runs = [bare_pool(client, bodies, in_flight)]
            for _ in range(reps):
                runs.append(through_backend(backend, chats, params))
                runs.append(bare_pool(client, bodies, in_flight))
    finally:
        getattr(backend, "close", lambda: None)()
    ratios = [
        runs[i].tokens_per_s / ((runs[i - 1].tokens_per_s + runs[i + 1].tokens_per_s) / 2)
        for i in range(1, len(runs), 2)
    ]
    return Overhead(in_flight, runs, ratios)


# ---------------------------------------------------------------- report


def step(message: str) -> None:
    """Progress on stderr (the report on stdout comes at the end)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8, help="`cai generate` on the first N prompts of --source")
    parser.add_argument(
        "--requests", type=int, default=16, help="client overhead: the first turns of the first N prompts"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--source", default="mixed", help="prompt set")
    parser.add_argument("--in-flight", type=int, default=8, help="the server's slots and the most requests in flight")
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="llama-server -t")
    parser.add_argument("--context", type=int, default=8192, help="llama-server -c (shared by the slots)")
    parser.add_argument("--reps", type=int, default=4, help="client runs per in-flight count (bare runs: one more)")
    args = parser.parse_args()

    try:
        binary, gguf = find_server(), embedded_gguf()
    except BackendError as exc:
        print(f"skipped: {exc}")
        return 0
    options: dict[str, int | str] = {
        "alias": MODEL,
        "parallel": args.in_flight,
        "threads": args.threads,
        "context": args.context,
    }
    flags = server_command(binary, gguf, 0, **options)[3:]  # type: ignore[arg-type]
    # the first --prompts of the set for `cai generate`; the first turns of the first --requests for the overhead
    requests = [item.messages for item in load_prompts(args.source, limit=max(args.prompts, args.requests))]
    requests = requests[: args.requests]
    # what engine.generate samples with: temperature 0 (greedy), the config's top_p, the run's seed
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, top_p=0.95, seed=0)
    bodies = [chat_body(chat, params) for chat in requests]

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"llama-server: {binary.name} -m {gguf.name} {' '.join(flags).replace('--port 0', '--port PORT')}")
    print(
        f"{args.prompts} prompts ({args.source}), 1 revision, no early stop, no judge, greedy, "
        f"max {args.max_new_tokens} new tokens: {3 * args.prompts} generations per `cai generate` run\n"
    )

    runs: list[PipelineRun] = []
    with tempfile.TemporaryDirectory(prefix="serve-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "llama-server.log"
        try:
            step("cai generate, hf backend")
            hf = load_backend("default", batch_size=args.hf_batch_size)
            dtype = hf.describe().get("dtype", "?")
            runs.append(
                run_pipeline(f"hf default ({dtype})", f"batch {args.hf_batch_size}", hf, "default", args, tmp / "hf")
            )
            del hf
            for n in (args.in_flight, 1):
                step(f"cai generate, llama-server, {n} in flight")
                with running_server(log, gguf=gguf, **options) as server_info:
                    url = server_info.url
                    spec = f"openai:{MODEL}@{url}"
                    server = load_backend(spec, batch_size=n)
                    try:
                        runs.append(
                            run_pipeline("llama-server", f"{n} in flight", server, spec, args, tmp / f"server-{n}")
                        )
                    finally:
                        getattr(server, "close", lambda: None)()
            step("client overhead")
            with running_server(log, gguf=gguf, **options) as server_info:
                url = server_info.url
                overheads = [
                    client_overhead(url, requests, params, n, args.reps, bodies) for n in sorted({1, args.in_flight})
                ]
        except (BackendError, httpx.HTTPError) as exc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else "(no server log)"
            print(f"error: {exc}\nllama-server log:\n{tail}", file=sys.stderr)
            return 1

    print("`cai generate` (engine.generate), one run each")
    print(
        f"{'backend':<22} {'in flight':<11} {'seconds':>8} {'rows/s':>7} {'gens':>5} {'gen tokens':>11} {'tokens/s':>9}"
    )
    for r in runs:
        print(
            f"{r.label:<22} {r.in_flight:<11} {r.seconds:>8.1f} {r.rows_per_s:>7.3f} {r.generations:>5} "
            f"{r.tokens:>11} {r.tokens_per_s:>9.1f}"
        )
    hf_run, many, one = runs
    print()
    print(
        f"server ({args.in_flight} in flight) / hf:  {many.tokens_per_s / hf_run.tokens_per_s:.2f}x tokens/s  "
        f"({many.rows_per_s / hf_run.rows_per_s:.2f}x rows/s)"
    )
    print(
        f"server {args.in_flight} / 1 in flight:   {many.tokens_per_s / one.tokens_per_s:.2f}x tokens/s  "
        f"({many.rows_per_s / one.rows_per_s:.2f}x rows/s)"
    )

    print(
        f"\nclient overhead: OpenAIBackend.generate vs a bare ThreadPoolExecutor + httpx.Client, "
        f"{len(requests)} first-turn requests, max {args.max_new_tokens} tokens, alternated after an untimed pass"
    )
    header = ("in flight", "run", "seconds", "tokens", "tokens/s", "client CPU s", "prompt tok", "client/bare")
    print("{:>9} {:<7} {:>8} {:>7} {:>9} {:>12} {:>11} {:>12}".format(*header))
    for o in overheads:
        ratios = iter(o.ratios)
        for run in o.runs:
            ratio = f"{next(ratios):.3f}" if run.kind == "client" else ""
            evaluated = "" if run.prompt_evaluated is None else str(run.prompt_evaluated)
            print(
                f"{o.in_flight:>9} {run.kind:<7} {run.seconds:>8.2f} {run.tokens:>7} {run.tokens_per_s:>9.1f} "
                f"{run.cpu_seconds:>12.3f} {evaluated:>11} {ratio:>12}"
            )
    print("(client CPU s: CPU time of this process during the run, i.e. what the client took from the server's cores;")
    print(" prompt tok: prompt tokens the server computed for a bare run, the rest came from its prompt cache)")
    print()
    for o in overheads:
        median = statistics.median(o.ratios)
        each = ", ".join(f"{r:.3f}" for r in o.ratios)
        verdict = "met" if median >= TARGET else "NOT met"
        print(
            f"client / bare at {o.in_flight} in flight: {median:.3f} (median of {each}; target >= {TARGET}): {verdict}"
        )
    tokens = {run.tokens for o in overheads for run in o.runs}
    if len(tokens) > 1:
        print(f"note: the runs generated different token counts ({sorted(tokens)}): compare tokens/s, not seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
