"""The review page (`cai review`) on a large run: index build, memory, and page timings in headless Chromium.

Target of the issue: the page stays responsive with 50,000 pairs in a run
(paginate or virtualise; measure and report the time to first paint of the
list). This synthesises a judged run folder of N trajectories (prompt ~150
characters, answers ~600, 2 critique-and-revision rounds, a judge label with 3
comparisons per row, written as JSONL straight from the record shapes; one row
of each file is validated through the pydantic models), then measures:

1. server start: ``create_app`` (the pair index) time, and the RSS it adds,
   in a fresh Python process per run;
2. in headless Chromium, from ``page.goto`` to the list's first page rendered
   (``body[data-list-ready]``; also the in-page times of that stamp and of the
   next frame after it, and the browser's first-contentful-paint);
3. opening a pair (click, detail rendered), a category filter (select, list
   rendered again), the next page (click, list rendered again), and a decision
   round trip (``a``, next pair rendered);
4. the same on a 500-pair run, for the ratio large/small.

Medians over ``--repeat`` fresh pages. Needs playwright and Chromium
(``--chromium``, default /usr/bin/chromium).

    python bench/review_load.py [--pairs 50000] [--small 500] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from engine.review.server import BackgroundServer, create_app

TOKEN = "bench-token"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CATEGORIES = [
    "violent_crime",
    "nonviolent_crime",
    "cyber_attacks",
    "self_harm",
    "hate",
    "privacy",
    "misinformation",
    "specialized_advice",
    "sexual_content",
    "general",
]
PRINCIPLES = [
    "no-evasion",
    "overall-ethics",
    "no-moralising",
    "calibrated-uncertainty",
    "respectful-declines",
    "no-needless-refusal",
    "answer-the-question",
    "no-fabrication",
    "no-sycophancy",
    "concise-and-clear",
    "respect-autonomy",
    "privacy-doxxing",
]
_VOCABULARY = (
    "the a to of and in that is for it with as was on be at by this have from or one had not but what all were "
    "when we there can an your which their said if do will each about how up out them then she many some so these "
    "would other into has more her two like him see time could no make than first been its who now people my made "
    "over did down only way find use may water long little very after words called just where most know get through "
    "back much before go good new write our used me man too any day same right look think also around another came "
    "come work three word must because does part even place well such here take why things help put years different "
    "away again off went old number great tell men say small every found still between name should home big give air "
    "line set own under read last never us left end along while might next sound below saw something thought both few "
    "those always looked show large often together asked house don world going want school important until form food "
    "keep children feet land side without boy once animals life enough took sometimes four head above kind began "
    "almost live page got earth need far hand high year mother light parts country father let night following picture "
    "being study second eyes soon times story boys since white days ever paper hard near sentence better best across "
    "during today others however sure means knew try told young miles sun ways thing whole hear example heard several "
    "change answer room sea against top turned learn point city play toward five using himself usually safety risk "
    "advice doctor process lock account password network server data model review policy request harm legal"
)
WORDS = _VOCABULARY.split()


# --- the synthetic run ---------------------------------------------------------------------------------------------


class Texts:
    """Sentences of a fixed vocabulary, drawn from a seeded pool (fast: no per-word randomness per row)."""

    def __init__(self, seed: int, pool: int = 4096) -> None:
        self.rng = random.Random(seed)
        self.pool = [self._sentence() for _ in range(pool)]

    def _sentence(self) -> str:
        words = self.rng.choices(WORDS, k=self.rng.randint(12, 20))
        return words[0].capitalize() + " " + " ".join(words[1:]) + "."

    def text(self, chars: int) -> str:
        out: list[str] = []
        size = 0
        while size < chars:
            out.append(self.rng.choice(self.pool))
            size += len(out[-1]) + 1
        return " ".join(out)

    def revise(self, text: str) -> str:
        """The text with one or two sentences replaced and one inserted: a realistic word diff."""
        sentences = text.split(". ")
        for _ in range(self.rng.randint(1, 2)):
            sentences[self.rng.randrange(len(sentences))] = self.rng.choice(self.pool).rstrip(".")
        sentences.insert(self.rng.randrange(len(sentences) + 1), self.rng.choice(self.pool).rstrip("."))
        return ". ".join(sentences)


def _judgments(principle: str, p_first: float) -> list[dict[str, Any]]:
    import math

    def one(first_as: str, p_a: float) -> dict[str, Any]:
        return {
            "principle_id": principle,
            "first_as": first_as,
            "p_a": p_a,
            "raw_p_a": p_a,
            "logprobs": [math.log(max(p_a, 1e-6)), math.log(max(1 - p_a, 1e-6))],
            "text": None,
            "stated": None,
            "unparsed": False,
        }

    return [one("A", p_first), one("B", 1 - p_first)]


def synthesise(out: Path, n: int, seed: int = 0) -> dict[str, float]:
    """Write a judged run of ``n`` trajectories to ``out``; returns seconds and file sizes."""
    from engine.records import Label, Trajectory

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    texts = Texts(seed)
    common = {
        "constitution": {"id": "default", "version": "1.0.0", "hash": "0" * 64},
        "models": {
            "policy": {"backend": "HFBackend", "model": "synthetic-policy"},
            "critic": {"backend": "HFBackend", "model": "synthetic-policy"},
        },
        "sampling": {"max_new_tokens": 256, "temperature": 0.7, "top_p": 0.95, "seed": 0, "stop": []},
        "seed": 0,
        "timings": {"initial": 1.2, "critique_1": 0.8, "revision_1": 1.1, "critique_2": 0.7, "revision_2": 1.0},
    }
    names = ["initial", "revision_1", "revision_2"]
    with (out / "trajectories.jsonl").open("w") as tfile, (out / "labels.jsonl").open("w") as lfile:
        for i in range(n):
            row_id = f"syn-{i:06d}"
            category = CATEGORIES[rng.randrange(len(CATEGORIES))]
            prompt = texts.text(150).rstrip(".") + "?"
            initial = texts.text(600)
            rounds, previous = [], initial
            for principle in rng.sample(PRINCIPLES, 2):
                revision = texts.revise(previous)
                critique = f"The response could follow {principle} better. " + texts.text(300)
                rounds.append(
                    {
                        "principle_id": principle,
                        "critique": critique,
                        "revision": revision,
                        "stopped": False,
                        "changed": True,
                    }
                )
                previous = revision
            trajectory = {
                "schema_version": 1,
                "id": row_id,
                "source": "synthetic",
                "category": category,
                "kind": "harmful" if rng.random() < 0.5 else "near_miss",
                "prompt": [{"role": "user", "content": prompt}],
                "initial": initial,
                "rounds": rounds,
                "final": previous,
                **common,
            }
            judge_principle = rng.choice(PRINCIPLES)
            strengths = [rng.random() for _ in names]
            comparisons = []
            for a, b in ((0, 1), (0, 2), (1, 2)):
                p_first = min(max(0.5 + (strengths[a] - strengths[b]) / 2, 0.01), 0.99)
                shown_second = min(max(p_first + rng.uniform(-0.2, 0.2), 0.01), 0.99)
                comparisons.append(
                    {
                        "first": names[a],
                        "second": names[b],
                        "p_first": (p_first + shown_second) / 2,
                        "p_first_shown_first": p_first,
                        "p_first_shown_second": shown_second,
                        "principles": [judge_principle],
                        "disagreed": (p_first - 0.5) * (shown_second - 0.5) < 0,
                        "unparsed": 0,
                        "judgments": _judgments(judge_principle, p_first),
                    }
                )
            best = max(range(3), key=strengths.__getitem__)
            worst = min(range(3), key=strengths.__getitem__)
            prob = min(max(0.5 + (strengths[best] - strengths[worst]) / 2, 0.5), 0.99)
            roll = rng.random()
            status = (
                "labelled" if roll < 0.85 else "low-margin" if roll < 0.92 else "tie" if roll < 0.97 else "unparsed"
            )
            if status == "unparsed":
                comparisons[0]["unparsed"] = 2
            pair = status in ("labelled", "low-margin")
            label = {
                "schema_version": 1,
                "id": row_id,
                "status": status,
                "chosen_from": names[best] if pair else None,
                "rejected_from": names[worst] if pair else None,
                "chosen_prob": prob if pair else None,
                "margin": 2 * prob - 1 if pair else None,
                "judge_model": "synthetic-judge",
                "principles": [judge_principle],
                "candidates": names,
                "strengths": strengths,
                "comparisons": comparisons,
            }
            if i == 0:  # the shapes are the real ones
                Trajectory.model_validate(trajectory)
                Label.model_validate(label)
            tfile.write(json.dumps(trajectory, separators=(",", ":")) + "\n")
            lfile.write(json.dumps(label, separators=(",", ":")) + "\n")
    return {
        "seconds": time.perf_counter() - start,
        "trajectories_mb": (out / "trajectories.jsonl").stat().st_size / 2**20,
        "labels_mb": (out / "labels.jsonl").stat().st_size / 2**20,
    }


# --- server start in a fresh process -------------------------------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_index(run_dir: Path) -> None:
    """(In a fresh process) build the app and print its time and memory as JSON."""
    before = _rss_mb()
    start = time.perf_counter()
    app = create_app(run_dir, TOKEN)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "pairs": len(app.state.index.entries),
                "rss_before_mb": before,
                "rss_after_mb": _rss_mb(),
                "peak_mb": peak,
            }
        )
    )


def index_in_child(run_dir: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child-index", str(run_dir)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the page in Chromium -------------------------------------------------------------------------------------------


class Server(BackgroundServer):
    """The review app under uvicorn in a thread, on a free loopback port, on the socket `cai review` makes."""

    def __init__(self, run_dir: Path) -> None:
        start = time.perf_counter()
        app = create_app(run_dir, TOKEN)
        self.index_seconds = time.perf_counter() - start
        super().__init__(app)


# Before the page's own script: note when the list stamp first appears and the frame after it.
PAINT_PROBE = """
new MutationObserver((_, observer) => {
  if (!document.body || !document.body.dataset.listReady || window.__listPainted) return;
  observer.disconnect();
  window.__listInDom = performance.now();
  requestAnimationFrame(() => setTimeout(() => { window.__listPainted = performance.now(); }, 0));
}).observe(document, { attributes: true, subtree: true, attributeFilter: ["data-list-ready"] });
"""


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


SHOWN = "(id) => { const h = document.querySelector('#detail h2'); return h && h.textContent.startsWith(id + ' ·'); }"
RELISTED = "(before) => document.body.dataset.listReady !== before"
IDS = "items => items.map((li) => li.dataset.id)"


def one_page(browser: Any, server: Server, rep: int, category: str) -> dict[str, float | None]:
    """Milliseconds per step on one fresh page; ``rep`` picks which pairs it opens and decides."""
    out: dict[str, float | None] = {}
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    context.add_init_script(PAINT_PROBE)
    page = context.new_page()
    url = f"{server.base}/?token={TOKEN}"
    out["goto → list rendered (wall)"] = _timed(
        lambda: (page.goto(url), page.wait_for_selector("body[data-list-ready]"))
    )
    page.wait_for_function("() => window.__listPainted !== undefined")
    times = page.evaluate(
        """() => ({
          dom: window.__listInDom, painted: window.__listPainted,
          fcp: (performance.getEntriesByName("first-contentful-paint")[0] || {}).startTime,
        })"""
    )
    out["  list in DOM (in page, from navigation)"] = times["dom"]
    out["  next frame after it (in page)"] = times["painted"]
    out["  first-contentful-paint (browser)"] = times.get("fcp")

    target = page.eval_on_selector_all("#list li", IDS)[4 + rep]
    out["open a pair (click → detail)"] = _timed(
        lambda: (page.click(f'#list li[data-id="{target}"]'), page.wait_for_function(SHOWN, arg=target))
    )

    before = page.evaluate("document.body.dataset.listReady")
    out["next page (click → list)"] = _timed(
        lambda: (page.click("#next-page"), page.wait_for_function(RELISTED, arg=before))
    )
    page.wait_for_selector("#list li.current")  # the page opens the new page's first pair too; let it finish
    page.wait_for_function(SHOWN, arg=page.eval_on_selector("#list li", "li => li.dataset.id"))

    filtered = page.evaluate("document.body.dataset.listReady")
    out["category filter (select → list)"] = _timed(
        lambda: (
            page.select_option("select[name=category]", category),
            page.wait_for_function(RELISTED, arg=filtered),
        )
    )
    ids = page.eval_on_selector_all("#list li", IDS)
    page.click(f'#list li[data-id="{ids[rep]}"]')
    page.wait_for_function(SHOWN, arg=ids[rep])
    out["decision round trip (a → next pair)"] = _timed(
        lambda: (page.keyboard.press("a"), page.wait_for_function(SHOWN, arg=ids[rep + 1]))
    )
    context.close()
    return out


def measure_page(browser: Any, server: Server, repeat: int, category: str) -> dict[str, list[float]]:
    """Milliseconds per step, one list per step, ``repeat`` fresh pages."""
    out: dict[str, list[float]] = {}
    for rep in range(repeat):
        for name, ms in one_page(browser, server, rep, category).items():
            if ms is not None:
                out.setdefault(name, []).append(ms)
    return out


def measure_api(server: Server, repeat: int, category: str) -> dict[str, list[float]]:
    import httpx

    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=server.base, headers={"X-Review-Token": TOKEN}) as client:
        pair_id = client.get("/api/pairs", params={"limit": 1}).json()["rows"][0]["id"]
        calls = {
            "  API GET /api/run": ("/api/run", {}),
            "  API GET /api/pairs (page 1)": ("/api/pairs", {"limit": 100}),
            "  API GET /api/pairs?category": ("/api/pairs", {"limit": 100, "category": category}),
            "  API GET /api/pairs/{id}": (f"/api/pairs/{pair_id}", {}),
        }
        for _ in range(repeat):
            for name, (path, params) in calls.items():
                call = partial(client.get, path, params=params)
                out.setdefault(name, []).append(_timed(lambda call=call: call().raise_for_status()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--keep", type=Path, help="Write the runs here and keep them (default: a temporary folder).")
    parser.add_argument("--child-index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_index:
        child_index(args.child_index)
        return

    from playwright.sync_api import sync_playwright

    root = args.keep or Path(tempfile.mkdtemp(prefix="review-load-"))
    sizes = {"large": args.pairs, "small": args.small}
    made = {name: synthesise(root / name, n) for name, n in sizes.items()}
    for name, n in sizes.items():
        m = made[name]
        print(
            f"{name}: {n} trajectories written in {m['seconds']:.1f} s "
            f"(trajectories.jsonl {m['trajectories_mb']:.0f} MB, labels.jsonl {m['labels_mb']:.0f} MB)"
        )
    started = {name: index_in_child(root / name) for name in sizes}
    category = CATEGORIES[0]

    results: dict[str, dict[str, list[float]]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for name in sizes:
            server = Server(root / name)
            measure_page(browser, server, 1, category)  # warm-up: first page of a fresh server, JIT, caches
            results[name] = measure_page(browser, server, args.repeat, category)
            results[name].update(measure_api(server, args.repeat, category))
            server.stop()
        version = browser.version
        browser.close()
    if not args.keep:
        shutil.rmtree(root)

    large, small = f"{args.pairs} pairs", f"{args.small} pairs"
    print(f"\nserver start (create_app in a fresh process; pairs indexed of {args.pairs} and {args.small} rows)")
    print(f"{'':<44}{large:>14}{small:>14}")
    s_large, s_small = started["large"], started["small"]
    print(f"{'pairs in the index':<44}{s_large['pairs']:>14.0f}{s_small['pairs']:>14.0f}")
    print(f"{'index build (s)':<44}{s_large['seconds']:>14.2f}{s_small['seconds']:>14.2f}")
    print(
        f"{'RSS added by the index (MB)':<44}{s_large['rss_after_mb'] - s_large['rss_before_mb']:>14.0f}"
        f"{s_small['rss_after_mb'] - s_small['rss_before_mb']:>14.0f}"
    )
    print(f"{'RSS after (MB)':<44}{s_large['rss_after_mb']:>14.0f}{s_small['rss_after_mb']:>14.0f}")
    print(f"{'peak RSS (MB)':<44}{s_large['peak_mb']:>14.0f}{s_small['peak_mb']:>14.0f}")

    socket_kind = "the socket `cai review` makes"
    print(
        f"\npage in headless Chromium {version}, median ms of {args.repeat} fresh pages (after one warm-up), "
        f"served on {socket_kind}"
    )
    print(f"{'step':<44}{large:>14}{small:>14}{'ratio':>8}{'max (large)':>13}")
    for step, values in results["large"].items():
        big, little = statistics.median(values), statistics.median(results["small"][step])
        print(f"{step:<44}{big:>14.1f}{little:>14.1f}{big / little:>7.1f}x{max(values):>13.1f}")


if __name__ == "__main__":
    main()
