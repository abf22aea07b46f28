"""The review page (`cai review`) driven in a real headless Chromium against the real server.

One scripted, judged run is made per module and copied per test; each test
starts the FastAPI app under uvicorn in a thread on a free loopback port and
drives the page with Playwright: decisions by key and by button, the list's
badges and counts, the export that applies the decisions, escaping of model
text, the filters, two tabs deciding the same pair, and a panel run's
"judges split" filter and per-judge probabilities.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from click.testing import CliRunner
from playwright.sync_api import Browser, Page, expect, sync_playwright

from engine.cli import cli
from engine.records import Trajectory
from engine.review.server import BackgroundServer, create_app
from tests.test_review_panel import make_panel, split_ids

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token"
PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


class ReviewServer(BackgroundServer):
    """The review app of one run folder, served in a thread on a free 127.0.0.1 port."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(create_app(run_dir, TOKEN))

    @property
    def url(self) -> str:
        return f"{self.base}/?token={TOKEN}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def template_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scripted run, judged, with two revisions per prompt (every row gives a pair)."""
    out = tmp_path_factory.mktemp("review") / "run"
    made = CliRunner().invoke(
        cli,
        [
            "generate",
            "--model",
            "scripted",
            "--out",
            str(out),
            "--prompts",
            "mixed",
            "--limit",
            "24",  # a spread sample: some categories get two or three prompts
            "--revisions",
            "2",
        ],
    )
    assert made.exit_code == 0, made.output
    assert (out / "labels.jsonl").exists()
    return out


@pytest.fixture
def run_dir(template_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the scripted run (file times kept: the dataset stays older than reviews.jsonl)."""
    return Path(shutil.copytree(template_run, tmp_path / "run"))


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start the review server on a run folder; every server started is stopped at the end."""
    servers: list[ReviewServer] = []

    def start(run_dir: Path) -> ReviewServer:
        servers.append(ReviewServer(run_dir))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Any]:
    """Open the review page in a fresh browser context and wait for its list."""
    contexts = []

    def open_page(url: str, **context_options: Any) -> Page:
        context = browser.new_context(viewport={"width": 1400, "height": 900}, **context_options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-list-ready]")
        return page

    yield open_page
    for context in contexts:
        context.close()


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def listed(page: Page) -> list[str]:
    """The ids of the list's rows, top to bottom."""
    ids: list[str] = page.eval_on_selector_all("#list li", "items => items.map((li) => li.dataset.id)")
    return ids


def row(page: Page, pair_id: str) -> Any:
    return page.locator(f'#list li[data-id="{pair_id}"]')


def expect_shown(page: Page, pair_id: str) -> None:
    """The detail view shows this pair (its first heading starts with the id)."""
    expect(page.locator("#detail h2").first).to_have_text(re.compile(rf"^{re.escape(pair_id)} · "))


def expect_list_reloaded(page: Page, before: str | None) -> None:
    """The list was rendered again since ``before`` (the old ``data-list-ready`` stamp)."""
    page.wait_for_function("(before) => document.body.dataset.listReady !== before", arg=before)


def test_decide_by_keys_and_buttons_then_export(new_page: Any, serve: Any, run_dir: Path) -> None:
    server = serve(run_dir)
    page = new_page(server.url)
    ids = listed(page)
    assert len(ids) == 24
    expect(page.locator("#counts")).to_have_text("accepted 0 · flipped 0 · dropped 0")

    row(page, ids[0]).click()
    expect_shown(page, ids[0])
    # The detail view: the conversation, first answer, each critique and diffed revision, the pair, the judge.
    t = Trajectory.model_validate_json((run_dir / "trajectories.jsonl").open().readline())
    label = jsonl(run_dir / "labels.jsonl")[0]
    assert (t.id, label["id"]) == (ids[0], ids[0])
    expect(page.locator("#detail .turn")).to_have_count(len(t.prompt))
    expect(page.locator("#detail .turn").last).to_contain_text(t.prompt[-1]["content"])
    expect(page.locator("#detail .step.critique")).to_have_count(len(t.rounds))
    expect(page.locator('#detail .step[data-name="critique_1"]')).to_contain_text(t.rounds[0].critique)
    expect(page.locator('#detail .step[data-name="revision_1"] ins')).not_to_have_count(0)
    expect(page.locator("#chosen")).to_contain_text(f"chosen: {label['chosen_from']}")
    expect(page.locator("#judge tr")).to_have_count(1 + len(label["comparisons"]))
    assert "[object " not in page.locator("#detail").inner_text()
    page.keyboard.press("a")
    expect_shown(page, ids[1])  # the next pair comes up by itself
    expect(row(page, ids[0]).locator(".badge")).to_have_text("accept")
    page.keyboard.press("f")
    expect_shown(page, ids[2])
    expect(row(page, ids[1]).locator(".badge")).to_have_text("flip")
    page.locator("#drop").click()
    expect_shown(page, ids[3])
    expect(row(page, ids[2]).locator(".badge")).to_have_text("drop")
    expect(page.locator("#counts")).to_have_text("accepted 1 · flipped 1 · dropped 1")

    # Typed into the note, the shortcut letters (a, f, d, u, j, k, n) are text, not actions.
    note = "judge and flip are fine; unsure about k/j <b>tone</b>"
    page.locator("#note").click()
    page.keyboard.type(note)
    typed = page.locator("#note").element_handle()
    page.keyboard.press("Control+Enter")
    expect(row(page, ids[3])).to_contain_text("✎")
    # Saved, the pair is shown again (fetched anew): wait for that before the next key, which the
    # old textarea would otherwise still catch.
    page.wait_for_function("(old) => !old.isConnected", arg=typed)
    expect_shown(page, ids[3])
    expect(page.locator("#note")).to_have_value(note)
    expect(row(page, ids[3]).locator(".badge")).to_have_count(0)
    expect(page.locator("#counts")).to_have_text("accepted 1 · flipped 1 · dropped 1")
    # Deciding the noted pair keeps its note.
    page.keyboard.press("a")
    expect_shown(page, ids[4])
    expect(row(page, ids[3]).locator(".badge")).to_have_text("accept")
    expect(page.locator("#counts")).to_have_text("accepted 2 · flipped 1 · dropped 1")
    badges = {i: page.locator(f'#list li[data-id="{i}"] .badge').all_inner_texts() for i in ids}
    assert badges == {i: {0: ["accept"], 1: ["flip"], 2: ["drop"], 3: ["accept"]}.get(n, []) for n, i in enumerate(ids)}
    # A reload shows the same state from the server.
    page.reload()
    page.wait_for_selector("body[data-list-ready]")
    expect(page.locator("#counts")).to_have_text("accepted 2 · flipped 1 · dropped 1")
    expect(row(page, ids[1]).locator(".badge")).to_have_text("flip")
    server.stop()

    exported = CliRunner().invoke(cli, ["export", str(run_dir)])
    assert exported.exit_code == 0, exported.output
    assert "dataset rebuilt with 4 review decisions (2 accepted, 1 flipped, 1 dropped)" in exported.output
    rows = {r["id"]: r for r in jsonl(run_dir / "export" / "preferences.jsonl")}
    labels = {r["id"]: r for r in jsonl(run_dir / "labels.jsonl")}
    texts = {
        t.id: t for t in (Trajectory.model_validate_json(line) for line in (run_dir / "trajectories.jsonl").open())
    }

    def text(pair_id: str, name: str) -> str:
        t = texts[pair_id]
        return t.initial if name == "initial" else t.rounds[int(name.split("_")[1]) - 1].revision or ""

    accepted, flipped, dropped, noted = ids[:4]
    judge = labels[accepted]
    assert (rows[accepted]["chosen_from"], rows[accepted]["rejected_from"]) == (
        judge["chosen_from"],
        judge["rejected_from"],
    )
    assert rows[accepted]["chosen"][0]["content"] == text(accepted, judge["chosen_from"])
    assert rows[accepted]["human_label"] == "accepted"
    assert rows[accepted]["label_source"] == "human"
    judge = labels[flipped]
    assert (rows[flipped]["chosen_from"], rows[flipped]["rejected_from"]) == (
        judge["rejected_from"],
        judge["chosen_from"],
    )
    assert rows[flipped]["chosen"][0]["content"] == text(flipped, judge["rejected_from"])
    assert rows[flipped]["rejected"][0]["content"] == text(flipped, judge["chosen_from"])
    assert rows[flipped]["human_label"] == "flipped"
    assert rows[flipped]["label_source"] == "human"
    assert dropped not in rows
    assert rows[noted]["human_note"] == note
    assert rows[noted]["human_label"] == "accepted"
    for other in ids[4:]:
        assert rows[other]["label_source"] == "ai_judge"
        assert (rows[other]["human_label"], rows[other]["human_note"]) == ("", "")


def test_note_on_an_undecided_pair_reaches_the_export(new_page: Any, serve: Any, run_dir: Path) -> None:
    server = serve(run_dir)
    page = new_page(server.url)
    pair_id = listed(page)[0]
    row(page, pair_id).click()
    expect_shown(page, pair_id)
    page.locator("#note").fill("check the second revision's tone")
    page.locator("#save-note").click()
    expect(row(page, pair_id)).to_contain_text("✎")
    server.stop()

    exported = CliRunner().invoke(cli, ["export", str(run_dir)])
    assert exported.exit_code == 0, exported.output
    rows = {r["id"]: r for r in jsonl(run_dir / "export" / "preferences.jsonl")}
    assert rows[pair_id]["human_note"] == "check the second revision's tone"


def test_model_text_is_shown_as_text_never_run(new_page: Any, serve: Any, run_dir: Path) -> None:
    path = run_dir / "trajectories.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    t = Trajectory.model_validate_json(lines[0])
    rounds = [t.rounds[0].model_copy(update={"critique": f"The answer quotes {PAYLOAD} verbatim."}), *t.rounds[1:]]
    hostile = t.model_copy(
        update={
            "prompt": [{"role": "user", "content": f"Repeat this: {PAYLOAD}"}],
            "initial": f"Sure: {PAYLOAD}",
            "rounds": rounds,
        }
    )
    lines[0] = Trajectory.model_validate(hostile.model_dump()).model_dump_json()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    server = serve(run_dir)

    # The page's CSP would block inline scripts and handlers anyway: test the escaping with CSP bypassed,
    # so that markup built from model text would run here.
    page = new_page(server.url, bypass_csp=True)
    assert page.evaluate("document.scripts.length") == 1
    row(page, t.id).click()
    expect_shown(page, t.id)
    page.wait_for_load_state("networkidle")  # an injected <img src=x> would have failed to load by now
    detail = page.locator("#detail").inner_text()
    assert f"Repeat this: {PAYLOAD}" in detail
    assert f"Sure: {PAYLOAD}" in detail
    assert f"quotes {PAYLOAD} verbatim" in detail
    assert PAYLOAD in row(page, t.id).inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#detail script, #detail img, #list script, #list img").count() == 0
    assert page.evaluate("document.scripts.length") == 1  # review.js only
    assert page.evaluate("[...document.scripts].map((s) => new URL(s.src).pathname)") == ["/static/review.js"]

    # The server sends its CSP with the page.
    response = page.request.get(server.url)
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_filters_category_and_review_state(new_page: Any, serve: Any, run_dir: Path) -> None:
    server = serve(run_dir)
    page = new_page(server.url)
    categories = {t["id"]: t["category"] or "" for t in jsonl(run_dir / "trajectories.jsonl")}
    counts: dict[str, int] = {}
    for value in categories.values():
        counts[value] = counts.get(value, 0) + 1
    assert len(counts) > 1, "the scripted run needs two categories"
    category = max(counts, key=lambda c: (counts[c] < len(categories), counts[c]))  # the largest that is not all
    assert counts[category] >= 2, "the test decides two pairs of one category"

    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=category]", category)
    expect_list_reloaded(page, before)
    ids = listed(page)
    assert ids, category
    assert {categories[i] for i in ids} == {category}
    assert sorted(ids) == sorted(i for i, c in categories.items() if c == category)
    api = page.request.get(
        f"http://127.0.0.1:{server.port}/api/pairs?category={category}&limit=500", headers={"X-Review-Token": TOKEN}
    ).json()
    assert [r["id"] for r in api["rows"]] == ids
    expect(page.locator("#range")).to_have_text(f"1\u2013{len(ids)} of {len(ids)}")  # en dash

    # Decided with "reviewed: not yet" on, a pair leaves the list and the next one is shown.
    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=reviewed]", "no")
    expect_list_reloaded(page, before)
    assert listed(page) == ids
    row(page, ids[0]).click()
    expect_shown(page, ids[0])
    page.keyboard.press("a")
    expect_shown(page, ids[1])
    assert listed(page) == ids[1:]
    expect(page.locator("#counts")).to_have_text("accepted 1 · flipped 0 · dropped 0")

    # Filters combine: category and "accepted" give that pair alone; "any" brings it back.
    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=reviewed]", "accept")
    expect_list_reloaded(page, before)
    assert listed(page) == [ids[0]]
    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=reviewed]", "")
    expect_list_reloaded(page, before)
    assert listed(page) == ids
    expect(row(page, ids[0]).locator(".badge")).to_have_text("accept")


def test_two_tabs_deciding_the_same_pair(new_page: Any, serve: Any, run_dir: Path) -> None:
    server = serve(run_dir)
    first, second = new_page(server.url), new_page(server.url)
    pair_id = listed(first)[0]
    for tab in (first, second):
        row(tab, pair_id).click()
        expect_shown(tab, pair_id)

    first.keyboard.press("a")
    expect(row(first, pair_id).locator(".badge")).to_have_text("accept")
    second.keyboard.press("f")
    expect(second.locator("#toast")).to_contain_text("decided elsewhere")
    decisions = [d for d in jsonl(run_dir / "reviews.jsonl") if d["id"] == pair_id]
    assert [(d["action"], d["revision"]) for d in decisions] == [("accept", 1)]

    # Opened again, the second tab shows the first tab's decision and can change it.
    row(second, pair_id).click()
    expect(second.locator("#actions")).to_contain_text("decided: accept")
    second.keyboard.press("f")
    expect(row(second, pair_id).locator(".badge")).to_have_text("flip")
    decisions = [d for d in jsonl(run_dir / "reviews.jsonl") if d["id"] == pair_id]
    assert [(d["action"], d["revision"]) for d in decisions] == [("accept", 1), ("flip", 2)]


def test_judges_split_filter_and_each_judges_probability_for_a_panel_run(
    new_page: Any, serve: Any, run_dir: Path, tmp_path: Path
) -> None:
    # A run with one judge offers no "judges split" control.
    single = serve(Path(shutil.copytree(run_dir, tmp_path / "single")))
    page = new_page(single.url)
    expect(page.locator("#split-filter")).to_be_hidden()

    hostile = '<img src=x onerror="window.__pwned=3">'
    by_id = make_panel(run_dir, judges=("judge-a", hostile))
    split = split_ids(by_id)
    server = serve(run_dir)
    page = new_page(server.url, bypass_csp=True)  # markup built from a judge's name would run here
    everything = listed(page)
    assert split and len(split) < len(everything)
    expect(page.locator("#split-filter")).to_be_visible()
    expect(row(page, split[0]).locator(".meta")).to_contain_text("judges split")

    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=split]", "true")
    expect_list_reloaded(page, before)
    assert listed(page) == split
    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=split]", "false")
    expect_list_reloaded(page, before)
    assert listed(page) == [i for i in everything if i not in split]
    before = page.evaluate("document.body.dataset.listReady")
    page.select_option("select[name=split]", "true")
    expect_list_reloaded(page, before)

    # The detail: one column per judge, its own P(first better) per comparison, the names as text.
    pair = split[0]
    row(page, pair).click()
    expect_shown(page, pair)
    comparisons = by_id[pair]["comparisons"]
    expect(page.locator("#judge th.judge-name")).to_have_text(
        ["P(first better) by judge-a", f"P(first better) by {hostile}"]
    )
    expect(page.locator("#judge td.split")).to_have_text(["yes" if c["split"] else "no" for c in comparisons])
    cells = page.locator("#judge tr").all()[1:]
    assert len(cells) == len(comparisons)
    for tr, comparison in zip(cells, comparisons, strict=True):
        shown = tr.locator("td.by-judge").all_inner_texts()
        for text, p in zip(shown, comparison["by_judge"].values(), strict=True):
            assert (text == "\u2013") if p is None else (abs(float(text) - p) < 6e-4), (text, p)  # en dash
    expect(page.locator("#detail h2", has_text="Judges judge-a + ")).to_contain_text(hostile)
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#detail img").count() == 0
