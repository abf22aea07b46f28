"""A stand-in inference server with K slots and long-tailed reply times, that measures how busy its slots were.

:class:`SlotServer` is the OpenAI-compatible :class:`~tests.fake_openai_server.FakeOpenAIServer`
(same deterministic replies) with ``slots`` slots, as llama.cpp's ``--parallel``
or a vLLM batch: a chat request waits for a free slot, holds it for its
service time, then gets its reply. Service times are log-normal (``median``
seconds, shape ``sigma``, at most ``cap``), drawn from a generator seeded by
the request's messages and seed and the server's ``seed``: the same request
takes the same time in every run, so two ways of sending one workload face
the same delays, and the long tail stands in for long-tailed reply lengths.

:func:`slot_use` is the measure: slot-time busy = the sum of the requests'
service times / (``slots`` x the wall time from the first service's start to
the last one's end). Time a request spends waiting for a slot is not service.
``tests/test_pipelined_generate.py`` tests it; ``bench/slot_busy.py`` uses it.

Run alone (``python -m tests.slot_server --slots 16``) the server prints its
API root on the first line of stdout and serves until killed; ``GET
/slot-use`` returns its :class:`SlotUse` and ``POST /slot-use/reset`` forgets
the requests so far. The bench runs it so, in a process of its own, so that
the server's Python work does not share the client's interpreter lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_openai_server import FakeOpenAIServer


@dataclass(frozen=True)
class SlotUse:
    """How busy ``slots`` slots were while serving ``requests`` requests."""

    slots: int
    requests: int
    service_s: float
    """Sum of the requests' service times (slot-seconds used)."""
    wall_s: float
    """From the first service's start to the last one's end."""
    peak: int
    """Most requests in service at once."""

    @property
    def busy(self) -> float:
        """Slot-time busy: ``service_s / (slots * wall_s)`` (0 with no requests)."""
        return self.service_s / (self.slots * self.wall_s) if self.wall_s > 0 else 0.0


def slot_use(intervals: Sequence[tuple[float, float]], slots: int) -> SlotUse:
    """The :class:`SlotUse` of service intervals ``(start, end)`` on ``slots`` slots."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, not {slots}")
    if not intervals:
        return SlotUse(slots, 0, 0.0, 0.0, 0)
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = level = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start (+1): back to back is not overlap
        level += step
        peak = max(peak, level)
    wall = max(end for _, end in intervals) - min(start for start, _ in intervals)
    return SlotUse(slots, len(intervals), sum(end - start for start, end in intervals), wall, peak)


class SlotServer(FakeOpenAIServer):
    """A :class:`FakeOpenAIServer` with ``slots`` slots and seeded log-normal service times (module docstring)."""

    def __init__(
        self,
        slots: int,
        *,
        median: float = 0.05,
        sigma: float = 1.0,
        cap: float = 2.0,
        seed: int = 0,
        model: str = "fake-model",
    ) -> None:
        super().__init__(model)
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.slots = slots
        self.median, self.sigma, self.cap, self.seed = median, sigma, cap, seed
        self._free = threading.BoundedSemaphore(slots)
        self.intervals: list[tuple[float, float]] = []
        """``(start, end)`` of each request's service, in ``time.perf_counter`` seconds."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(super()._handler()):  # type: ignore[misc]
            disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stall per reply

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/slot-use":
                    return self.send(200, json.dumps(asdict(server.use())).encode())
                return super().do_GET()  # type: ignore[no-any-return]

            def do_POST(self) -> None:
                if self.path.rstrip("/") == "/slot-use/reset":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    server.reset()
                    return self.send(200, b"{}")
                return super().do_POST()  # type: ignore[no-any-return]

        return Handler

    def service_time(self, request: dict[str, Any]) -> float:
        """Seconds this request holds its slot: the same for the same messages, seed and server seed."""
        key = json.dumps([request.get("messages"), request.get("seed"), self.seed], sort_keys=True)
        rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
        return min(self.cap, self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0)))

    def hold(self, request: dict[str, Any]) -> None:
        seconds = self.service_time(request)
        with self._free:
            start = time.perf_counter()
            self.release.wait(seconds)
            end = time.perf_counter()
        with self.lock:
            self.intervals.append((start, end))

    def use(self) -> SlotUse:
        """How busy the slots were over the requests served since the last :meth:`reset`."""
        with self.lock:
            return slot_use(list(self.intervals), self.slots)

    def reset(self) -> None:
        """Forget the requests served so far (before the next measured workload)."""
        with self.lock:
            self.intervals.clear()
            self.max_in_flight = 0


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="The stand-in server with K slots, until killed.")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--median", type=float, default=0.05)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--cap", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = SlotServer(args.slots, median=args.median, sigma=args.sigma, cap=args.cap, seed=args.seed)
    print(server.url, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
