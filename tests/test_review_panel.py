"""``cai review`` of a run labelled by a panel of judges: the ``split`` flag, its list filter, each judge's probability.

A scripted, judged run is made once per module; each test copies it and
rewrites its ``labels.jsonl`` as a panel of two judges would have written it
(``by_judge`` and ``split`` on every comparison, ``judge_model`` the names
joined with " + "), or strips both fields as a label file from before panels.
The page itself is checked in a real browser in ``test_review_browser.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.records import Label
from engine.review.pairs import PairIndex
from engine.review.server import create_app
from tests.test_review import make_run

TOKEN = "panel-test-token-0123"
AUTH = {"X-Review-Token": TOKEN}
JUDGES = ("judge-a", "judge-b")


def read_labels(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "labels.jsonl").read_text().splitlines() if line.strip()]


def write_labels(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    (run_dir / "labels.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def make_panel(run_dir: Path, judges: tuple[str, str] = JUDGES) -> dict[str, dict[str, Any]]:
    """Rewrite the run's labels as a panel of two judges; every third row's judges split on its last comparison.

    The first judge's probability is the comparison's own; the second agrees with it (shifted towards it)
    except on a split comparison, where it votes the other way, and on a row it could not read (None).
    Returns the labels by id, as written.
    """
    rows = read_labels(run_dir)
    first, second = judges
    for number, row in enumerate(rows):
        row["judge_model"] = " + ".join(judges)
        last = len(row["comparisons"]) - 1
        for at, comparison in enumerate(row["comparisons"]):
            p = comparison["p_first"]
            split = number % 3 == 1 and at == last
            if p is None or number % 5 == 4:
                other = None
            elif split:
                other = 0.25 if p >= 0.5 else 0.75
            else:
                other = round((p + (0.9 if p >= 0.5 else 0.1)) / 2, 4)
            comparison["by_judge"] = {first: p, second: other}
            comparison["split"] = split
    Label.model_validate(rows[0])  # still a label this version reads
    write_labels(run_dir, rows)
    return {row["id"]: row for row in rows}


def strip_panel_fields(run_dir: Path) -> None:
    """Make the run's labels look as written before panels: no ``by_judge``, no ``split``."""
    rows = read_labels(run_dir)
    for row in rows:
        for comparison in row["comparisons"]:
            comparison.pop("by_judge", None)
            comparison.pop("split", None)
    write_labels(run_dir, rows)


def split_ids(by_id: dict[str, dict[str, Any]]) -> list[str]:
    """Ids of the labelled rows with a split comparison, in file order."""
    return [i for i, r in by_id.items() if r["chosen_from"] and any(c.get("split") for c in r["comparisons"])]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("panel") / "run", limit=12)


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(template, out)
    return out


def client_of(run_dir: Path) -> TestClient:
    return TestClient(create_app(run_dir, TOKEN, hosts=("testserver",)))


def listed(client: TestClient, query: str = "") -> list[str]:
    answer = client.get(f"/api/pairs?limit=500&{query}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == len(body["rows"])
    return [row["id"] for row in body["rows"]]


def test_the_split_filter_lists_exactly_the_rows_whose_judges_split(run_dir: Path) -> None:
    by_id = make_panel(run_dir)
    client = client_of(run_dir)
    everything = listed(client)
    split = split_ids(by_id)
    assert split and len(split) < len(everything), "the test needs split and unsplit rows"
    assert listed(client, "split=true") == split
    assert listed(client, "split=false") == [i for i in everything if i not in split]
    rows = client.get("/api/pairs?limit=500", headers=AUTH).json()["rows"]
    assert {r["id"]: r["split"] for r in rows} == {i: i in split for i in everything}
    # It combines with the other filters like any of them.
    disagreed = set(listed(client, "disagreed=true"))
    assert listed(client, "split=true&disagreed=false") == [i for i in split if i not in disagreed]
    run = client.get("/api/run", headers=AUTH).json()
    assert run["panel"] is True and run["pairs"] == len(everything)
    assert PairIndex(run_dir).panel


def test_split_is_any_comparison_of_the_row_not_only_the_first(run_dir: Path) -> None:
    by_id = make_panel(run_dir)
    split = split_ids(by_id)
    assert all(not by_id[i]["comparisons"][0]["split"] for i in split if len(by_id[i]["comparisons"]) > 1)
    index = PairIndex(run_dir)
    assert [e.id for e in index.entries if e.split] == split


def test_a_run_labelled_before_panels_has_no_split_and_no_panel(run_dir: Path) -> None:
    strip_panel_fields(run_dir)
    assert all("split" not in c for row in read_labels(run_dir) for c in row["comparisons"])
    client = client_of(run_dir)
    everything = listed(client)
    assert everything
    assert listed(client, "split=true") == []
    assert listed(client, "split=false") == everything
    assert client.get("/api/run", headers=AUTH).json()["panel"] is False
    detail = client.get(f"/api/pairs/{everything[0]}", headers=AUTH).json()
    assert detail["split"] is False
    assert all(c["by_judge"] == {} and c["split"] is False for c in detail["judge"]["comparisons"])


def test_a_single_judge_run_is_no_panel(run_dir: Path) -> None:
    client = client_of(run_dir)  # as `cai generate` writes it with one judge: by_judge {} and split false
    assert client.get("/api/run", headers=AUTH).json()["panel"] is False
    assert listed(client, "split=true") == []


@pytest.mark.parametrize("value", ["perhaps", "2", "yes please", ""])
def test_a_bad_split_value_is_refused_with_a_message(run_dir: Path, value: str) -> None:
    make_panel(run_dir)
    answer = client_of(run_dir).get(f"/api/pairs?split={value}", headers=AUTH)
    assert answer.status_code == 422, value
    error = answer.json()["error"]
    assert "split" in error and "bool" in error, error


def test_the_detail_shows_each_judges_probability(run_dir: Path) -> None:
    by_id = make_panel(run_dir)
    client = client_of(run_dir)
    for pair in (split_ids(by_id)[0], listed(client, "split=false")[0]):
        detail = client.get(f"/api/pairs/{pair}", headers=AUTH).json()
        label = by_id[pair]
        assert detail["judge"]["model"] == "judge-a + judge-b"
        assert detail["split"] == any(c["split"] for c in label["comparisons"])
        got = [(c["by_judge"], c["split"]) for c in detail["judge"]["comparisons"]]
        assert got == [(c["by_judge"], c["split"]) for c in label["comparisons"]]
        assert all(list(c["by_judge"]) == list(JUDGES) for c in detail["judge"]["comparisons"])
    unread = next(
        i for i, r in by_id.items() if r["chosen_from"] and r["comparisons"][0]["by_judge"]["judge-b"] is None
    )
    detail = client.get(f"/api/pairs/{unread}", headers=AUTH).json()
    assert detail["judge"]["comparisons"][0]["by_judge"]["judge-b"] is None  # a judge that read nothing


def test_the_page_has_the_judges_split_control_and_renders_by_judge_as_text(run_dir: Path) -> None:
    client = client_of(run_dir)
    page = client.get(f"/?token={TOKEN}").text
    assert 'id="split-filter" hidden' in page and '<select name="split">' in page
    script = client.get("/static/review.js").text
    assert "run.panel" in script and "by_judge" in script
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
