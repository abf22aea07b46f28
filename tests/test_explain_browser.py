"""The review page's "explain" button in a real headless Chromium: sentences tinted by push, model text as text.

Skipped, like ``tests/test_review_browser.py``, without playwright or /usr/bin/chromium.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from click.testing import CliRunner
from playwright.sync_api import Browser, expect, sync_playwright

from engine.backends.scripted import ScriptedBackend
from engine.cli import cli
from engine.judge.pairwise import Judge
from engine.records import Trajectory
from engine.review.server import BackgroundServer, create_app
from tests.test_explain import KEYWORD, keyword_taste

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "explain-browser-token"
MARKUP = "<b>x</b>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from tests.test_review_browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def keyword_run(out: Path) -> str:
    """A scripted run whose first labelled pair's chosen text holds the keyword and some markup; its id."""
    args = ["generate", "--model", "scripted", "--out", str(out), "--prompts", "mixed", "--limit", "4"]
    made = CliRunner().invoke(cli, [*args, "--revisions", "2", "--judge-check", "none"])
    assert made.exit_code == 0, made.output
    label = next(
        r for r in map(json.loads, (out / "labels.jsonl").read_text().splitlines()) if r["status"] == "labelled"
    )
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    for n, line in enumerate(lines):
        t = Trajectory.model_validate_json(line)
        if t.id != label["id"]:
            continue
        text = f"Press on the wound. Apply a {KEYWORD} {MARKUP} above it. Call for help."
        number = int(label["chosen_from"].split("_")[1]) if label["chosen_from"] != "initial" else 0
        if number:
            rounds = list(t.rounds)
            rounds[number - 1] = rounds[number - 1].model_copy(update={"revision": text})
            t = t.model_copy(update={"rounds": rounds})
        else:
            t = t.model_copy(update={"initial": text})
        lines[n] = t.model_dump_json()
    (out / "trajectories.jsonl").write_text("\n".join(lines) + "\n")
    return str(label["id"])


def test_explain_tints_sentences_and_keeps_markup_as_text(browser: Browser, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pair = keyword_run(run)
    app = create_app(run, TOKEN, explain_judge=lambda: Judge(ScriptedBackend(scores=keyword_taste)))
    server = BackgroundServer(app)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{server.base}/?token={TOKEN}")
        page.wait_for_selector("body[data-list-ready]")
        page.locator(f'#list li[data-id="{pair}"]').click()
        expect(page.locator("#detail h2").first).to_contain_text(pair)
        page.locator("#explain").click()
        page.wait_for_selector(f'body[data-explained="{pair}"]')
        chosen = page.locator("#chosen .push")
        expect(chosen).to_have_count(3)
        expect(chosen.nth(1)).to_have_class("push push-for-3")  # the keyword's sentence, toward chosen
        expect(chosen.nth(0)).to_have_class("push push-none")
        expect(page.locator("#rejected .push").first).to_have_class("push push-none")
        expect(chosen.nth(1)).to_contain_text(f"{KEYWORD} {MARKUP}")  # literal text, not a bold element
        expect(page.locator("#chosen b")).to_have_count(0)
        expect(page.locator("#explain-result")).to_contain_text("faithful")
    finally:
        context.close()
        server.stop()
