"""``cai review``: the decisions store, the review server's API, and how decisions reach the dataset and judge-eval.

The page itself is driven in a real browser in ``test_review_browser.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datasets import load_from_disk
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from engine.backends.base import Backend
from engine.backends.scripted import ScriptedBackend, longer_is_better
from engine.cli import cli
from engine.config import GenerateConfig
from engine.dataset.of_run import rebuild_dataset
from engine.generate import generate
from engine.records import REVIEWS, ReviewError, load_decisions
from engine.review.decisions import DecisionLog
from engine.review.pairs import PairIndex, word_diff
from engine.review.server import create_app

TOKEN = "s3cret-token"
AUTH = {"X-Review-Token": TOKEN}


def scripted(spec: str, **_: object) -> Backend:
    return ScriptedBackend(scores=longer_is_better, name=spec)


def make_run(out: Path, *, judge: bool = True, limit: int = 16) -> Path:
    config = {"out": out, "model": "scripted", "prompts": "mixed", "limit": limit, "revisions": 2, "judge": judge}
    generate(GenerateConfig.model_validate(config), progress=False, backends=scripted)
    return out


@pytest.fixture(scope="module")
def judged_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("template") / "run")


@pytest.fixture
def run_dir(judged_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of a judged scripted run; one row made to look disputed (orders disagree, unparsed output)."""
    out = tmp_path / "run"
    out.mkdir()
    for item in judged_template.iterdir():
        if item.is_file():
            (out / item.name).write_bytes(item.read_bytes())
    lines = (out / "labels.jsonl").read_text().splitlines()
    label = json.loads(lines[1])
    label["comparisons"][0]["disagreed"] = True
    label["comparisons"][0]["unparsed"] = 1
    lines[1] = json.dumps(label)
    (out / "labels.jsonl").write_text("\n".join(lines) + "\n")
    rebuild_dataset(out)
    return out


@pytest.fixture
def client(run_dir: Path) -> TestClient:
    return TestClient(create_app(run_dir, TOKEN, hosts=("testserver",)))


def labels(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in map(json.loads, (run_dir / "labels.jsonl").read_text().splitlines())}


def review_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / REVIEWS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def decide(client: TestClient, pair: str, action: str, revision: int = 0, **extra: Any) -> Any:
    return client.post(
        f"/api/pairs/{pair}/decision", headers=AUTH, json={"action": action, "revision": revision, **extra}
    )


def first_ids(client: TestClient, n: int) -> list[str]:
    return [row["id"] for row in client.get(f"/api/pairs?limit={n}", headers=AUTH).json()["rows"]]


# --- access -----------------------------------------------------------------------------------------------


def test_the_api_and_the_page_need_the_token_and_nothing_is_written_without_it(
    client: TestClient, run_dir: Path
) -> None:
    pair = first_ids(client, 1)[0]
    assert client.get("/api/run").status_code == 401
    assert "missing token" in client.get("/api/run").json()["error"]
    assert client.get("/api/run", headers={"X-Review-Token": "guess"}).status_code == 403
    assert client.get("/").status_code == 401
    assert client.get(f"/?token={TOKEN}").status_code == 200
    body = {"action": "accept", "revision": 0}
    assert client.post(f"/api/pairs/{pair}/decision", json=body).status_code == 401
    assert client.post(f"/api/pairs/{pair}/decision", json=body, headers={"X-Review-Token": "x"}).status_code == 403
    assert not (run_dir / REVIEWS).exists()


def test_a_request_for_another_host_name_is_refused(run_dir: Path) -> None:
    app = create_app(run_dir, TOKEN)  # loopback names only
    local = TestClient(app, base_url="http://127.0.0.1:8000")
    assert local.get("/api/run", headers=AUTH).status_code == 200
    rebound = TestClient(app, base_url="http://attacker.example:8000")
    answer = rebound.get("/api/run", headers=AUTH)
    assert answer.status_code == 421 and "127.0.0.1" in answer.json()["error"]


def test_answers_carry_a_strict_content_security_policy(client: TestClient) -> None:
    page = client.get(f"/?token={TOKEN}")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/review.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../server.py").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("nope", {"action": "accept", "revision": 0}, 404, "no pair 'nope'"),
        (None, {"action": "approve", "revision": 0}, 422, "action"),
        (None, {"action": "accept"}, 422, "revision"),
        (None, {"action": "accept", "revision": -1}, 422, "revision"),
        (None, {"action": "accept", "revision": 0, "extra": 1}, 422, "extra"),
        (None, {"action": "note", "revision": 0, "note": "x" * 10_001}, 422, "note"),
        (None, "{not json", 422, ""),
        (None, [1, 2], 422, ""),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_write_nothing(
    client: TestClient, run_dir: Path, path: str | None, body: Any, status: int, message: str
) -> None:
    pair = path or first_ids(client, 1)[0]
    url = f"/api/pairs/{pair}/decision"
    if isinstance(body, str):
        answer = client.post(url, headers={**AUTH, "Content-Type": "application/json"}, content=body.encode())
    else:
        answer = client.post(url, headers=AUTH, json=body)
    assert answer.status_code == status
    assert message in answer.json()["error"] and answer.json()["error"]
    assert not (run_dir / REVIEWS).exists()


def test_bad_list_queries_are_refused(client: TestClient) -> None:
    for query in (
        "offset=-1",
        "limit=0",
        "limit=501",
        "min_margin=2",
        "reviewed=maybe",
        "disagreed=perhaps",
        "split=perhaps",
    ):
        answer = client.get(f"/api/pairs?{query}", headers=AUTH)
        assert answer.status_code == 422, query
        assert answer.json()["error"], query
    assert client.get("/api/pairs/nope", headers=AUTH).status_code == 404


# --- the list and the detail ------------------------------------------------------------------------------


def test_the_list_filters_agree_with_the_labels(client: TestClient, run_dir: Path) -> None:
    by_id = labels(run_dir)
    everything = client.get("/api/pairs?limit=500", headers=AUTH).json()
    assert everything["total"] == len(everything["rows"]) == sum(1 for r in by_id.values() if r["chosen_from"])
    rows = {row["id"]: row for row in everything["rows"]}
    category = next(iter(rows.values()))["category"]
    got = client.get(f"/api/pairs?limit=500&category={category}", headers=AUTH).json()["rows"]
    assert {r["id"] for r in got} == {i for i, r in rows.items() if r["category"] == category}
    principle = next(iter(rows.values()))["principles"][-1]
    got = client.get(f"/api/pairs?limit=500&principle={principle}", headers=AUTH).json()["rows"]
    assert got and all(principle in r["principles"] for r in got)
    disputed = [i for i, r in by_id.items() if any(c["disagreed"] for c in r["comparisons"])]
    assert [r["id"] for r in client.get("/api/pairs?disagreed=true", headers=AUTH).json()["rows"]] == disputed
    assert [r["id"] for r in client.get("/api/pairs?unparsed=true", headers=AUTH).json()["rows"]] == disputed
    assert client.get("/api/pairs?unparsed=false&limit=500", headers=AUTH).json()["total"] == len(rows) - 1
    margins = sorted(r["margin"] for r in rows.values())
    cut = margins[len(margins) // 2]
    got = client.get(f"/api/pairs?limit=500&min_margin={cut}", headers=AUTH).json()["rows"]
    assert {r["id"] for r in got} == {i for i, r in rows.items() if r["margin"] >= cut}
    word = rows[next(iter(rows))]["snippet"].split()[2].upper()
    got = client.get(f"/api/pairs?limit=500&q={word}", headers=AUTH).json()["rows"]
    assert got and all(word.lower() in r["snippet"].lower() for r in got)
    page = client.get("/api/pairs?offset=3&limit=4", headers=AUTH).json()
    assert [r["id"] for r in page["rows"]] == [r["id"] for r in everything["rows"][3:7]]


def test_reviewed_filter_and_counts_follow_decisions(client: TestClient) -> None:
    a, b, c = first_ids(client, 3)
    assert decide(client, a, "accept").status_code == 200
    assert decide(client, b, "drop").status_code == 200
    assert decide(client, c, "flip").status_code == 200
    assert decide(client, c, "clear", revision=1).status_code == 200
    listed = lambda q: [r["id"] for r in client.get(f"/api/pairs?limit=500&{q}", headers=AUTH).json()["rows"]]  # noqa: E731
    assert listed("reviewed=yes") == [a, b]
    assert listed("reviewed=drop") == [b]
    assert a not in listed("reviewed=no") and c in listed("reviewed=no")
    assert client.get("/api/run", headers=AUTH).json()["decisions"] == {"accept": 1, "flip": 0, "drop": 1}


def test_the_detail_shows_the_whole_story_with_diffs_and_both_orders(client: TestClient, run_dir: Path) -> None:
    pair = first_ids(client, 1)[0]
    detail = client.get(f"/api/pairs/{pair}", headers=AUTH).json()
    trajectory = next(json.loads(x) for x in (run_dir / "trajectories.jsonl").read_text().splitlines() if pair in x)
    assert detail["prompt"] == trajectory["prompt"]
    kinds = [s["kind"] for s in detail["story"]]
    assert kinds == ["answer", "critique", "revision", "critique", "revision"]
    first_revision = detail["story"][2]
    before, after = trajectory["initial"], trajectory["rounds"][0]["revision"]
    assert "".join(t for op, t in first_revision["diff"] if op != "+") == before
    assert "".join(t for op, t in first_revision["diff"] if op != "-") == after
    label = labels(run_dir)[pair]
    assert detail["chosen_from"] == label["chosen_from"] and detail["rejected_from"] == label["rejected_from"]
    first = detail["judge"]["comparisons"][0]
    assert first["p_first_shown_first"] == label["comparisons"][0]["p_first_shown_first"]
    assert first["p_first_shown_second"] == label["comparisons"][0]["p_first_shown_second"]


@given(st.text(max_size=60), st.text(max_size=60))
def test_a_word_diff_rebuilds_both_texts(before: str, after: str) -> None:
    ops = word_diff(before, after)
    assert "".join(t for op, t in ops if op != "+") == before
    assert "".join(t for op, t in ops if op != "-") == after
    assert all(op in "=-+" for op, _ in ops)


# --- decisions --------------------------------------------------------------------------------------------


def test_decisions_are_appended_with_revisions_and_a_stale_view_is_refused(client: TestClient, run_dir: Path) -> None:
    pair = first_ids(client, 1)[0]
    first = decide(client, pair, "flip").json()["decision"]
    assert first["revision"] == 1 and first["action"] == "flip"
    stale = decide(client, pair, "accept", revision=0)
    assert stale.status_code == 409 and "decided elsewhere" in stale.json()["error"]
    noted = decide(client, pair, "note", revision=1, note="both answers are weak").json()["decision"]
    assert noted["action"] == "flip" and noted["note"] == "both answers are weak" and noted["revision"] == 2
    lines = review_lines(run_dir)
    assert [line["revision"] for line in lines] == [1, 2]
    detail = client.get(f"/api/pairs/{pair}", headers=AUTH).json()
    assert detail["decision"]["revision"] == 2 and len(detail["history"]) == 2


def test_concurrent_writers_never_tear_or_interleave_lines(run_dir: Path) -> None:
    ids = [e.id for e in PairIndex(run_dir).entries]
    logs = [DecisionLog(run_dir), DecisionLog(run_dir)]  # two servers on one run
    texts = ("chosen text", "rejected text")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            log = logs[n % 2]
            for round_ in range(10):
                pair = ids[(n + round_) % len(ids)]
                for _ in range(20):
                    current, _ = log.get(pair)
                    try:
                        log.decide(
                            pair,
                            "accept",
                            revision=current.revision if current else 0,
                            shown=("a", "b"),
                            texts=texts,
                            note=f"w{n} r{round_} " + "x" * 500,
                        )
                        break
                    except ReviewError as exc:
                        assert exc.status == 409
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = review_lines(run_dir)
    assert len(lines) == 80
    by_pair: dict[str, list[int]] = {}
    for line in lines:
        by_pair.setdefault(line["id"], []).append(line["revision"])
    assert all(revisions == list(range(1, len(revisions) + 1)) for revisions in by_pair.values())


def test_a_torn_last_line_is_skipped_and_a_bad_line_inside_is_an_error(run_dir: Path, client: TestClient) -> None:
    pair = first_ids(client, 1)[0]
    decide(client, pair, "drop")
    with (run_dir / REVIEWS).open("a") as handle:
        handle.write('{"id": "half a li')
    assert load_decisions(run_dir)[pair].action == "drop"
    text = (run_dir / REVIEWS).read_text()
    (run_dir / REVIEWS).write_text("garbage\n" + text)
    with pytest.raises(ReviewError, match=r"reviews.jsonl:1: not a review decision"):
        load_decisions(run_dir)


def test_a_torn_last_line_is_cut_off_before_the_next_decision_is_appended(run_dir: Path, client: TestClient) -> None:
    first, second = first_ids(client, 2)
    decide(client, first, "drop")
    with (run_dir / REVIEWS).open("a") as handle:  # a server killed in the middle of a write
        handle.write('{"id": "half a li')
    assert decide(client, second, "flip").status_code == 200
    decisions = load_decisions(run_dir)  # no bad line inside: the new decision did not fuse with the torn one
    assert (decisions[first].action, decisions[second].action) == ("drop", "flip")
    assert [line["id"] for line in review_lines(run_dir)] == [first, second]


def test_a_line_rewritten_after_the_server_started_is_a_500_with_a_message(client: TestClient, run_dir: Path) -> None:
    pair = first_ids(client, 1)[0]
    path = run_dir / "trajectories.jsonl"
    lines = path.read_bytes().split(b"\n")
    number = next(i for i, line in enumerate(lines) if pair.encode() in line)
    lines[number] = b"{" + b" " * (len(lines[number]) - 2) + b"}"  # same length: the index's offsets still hold
    path.write_bytes(b"\n".join(lines))
    answer = client.get(f"/api/pairs/{pair}", headers=AUTH)
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert f"trajectories.jsonl:{number + 1}: not a trajectory" in error and "restart it" in error
    refused = decide(client, pair, "accept")
    assert refused.status_code == 500 and "trajectories.jsonl" in refused.json()["error"]
    assert not (run_dir / REVIEWS).exists()


# --- into the dataset and judge-eval ----------------------------------------------------------------------


def test_the_dataset_applies_decisions_with_a_human_label(client: TestClient, run_dir: Path) -> None:
    accepted, flipped, dropped = first_ids(client, 3)
    decide(client, accepted, "accept")
    decide(client, flipped, "flip")
    decide(client, dropped, "drop")
    decide(client, accepted, "note", revision=1, note="fine")
    _, sizes, stats = rebuild_dataset(run_dir)
    pairs = {row["id"]: row for row in load_from_disk(str(run_dir / "dataset"))["preferences"]}
    by_label = labels(run_dir)
    assert dropped not in pairs and sizes["preferences"] == len(by_label) - 1
    a, f = pairs[accepted], pairs[flipped]
    assert (a["chosen_from"], a["rejected_from"]) == (
        by_label[accepted]["chosen_from"],
        by_label[accepted]["rejected_from"],
    )
    assert (f["chosen_from"], f["rejected_from"]) == (
        by_label[flipped]["rejected_from"],
        by_label[flipped]["chosen_from"],
    )
    assert (a["human_label"], f["human_label"], a["human_note"]) == ("accepted", "flipped", "fine")
    assert a["label_source"] == f["label_source"] == "human" and a["chosen_prob"] == 1.0
    untouched = next(row for i, row in pairs.items() if i not in (accepted, flipped))
    assert untouched["human_label"] == "" and untouched["label_source"] == "ai_judge"
    assert (stats.judge_agreed, stats.judge_disagreed) == (1, 1)
    card = (run_dir / "README.md").read_text()
    assert "1 accepted, 1 flipped, 1 dropped" in card and "agreed with the person 1 times (50%)" in card


def test_a_decision_about_texts_the_run_no_longer_holds_is_ignored(client: TestClient, run_dir: Path) -> None:
    pair = first_ids(client, 1)[0]
    decide(client, pair, "drop")
    path = run_dir / "trajectories.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        if row["id"] == pair:
            row["initial"] += " (regenerated)"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, _, stats = rebuild_dataset(run_dir)
    assert stats.stale_decisions == 1
    assert pair in set(load_from_disk(str(run_dir / "dataset"))["preferences"]["id"])


def test_people_can_rescue_a_pair_the_judge_dropped_and_review_an_unjudged_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "plain", judge=False, limit=8)
    app = TestClient(create_app(run_dir, TOKEN, hosts=("testserver",)))
    ids = first_ids(app, 2)
    assert ids, "an unjudged run lists its revised rows"
    assert decide(app, ids[0], "flip").status_code == 200
    rebuild_dataset(run_dir)
    row = next(r for r in load_from_disk(str(run_dir / "dataset"))["preferences"] if r["id"] == ids[0])
    assert (row["chosen_from"], row["rejected_from"], row["human_label"]) == (
        "initial",
        row["rejected_from"],
        "flipped",
    )
    assert row["rejected_from"].startswith("revision_")


def test_cai_export_applies_decisions_made_since_the_dataset_was_built(client: TestClient, run_dir: Path) -> None:
    pair = first_ids(client, 1)[0]
    decide(client, pair, "drop")
    os.utime(run_dir / REVIEWS)
    result = CliRunner().invoke(cli, ["export", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "dataset rebuilt with 1 review decisions (0 accepted, 0 flipped, 1 dropped)" in result.output
    exported = [json.loads(x)["id"] for x in (run_dir / "export" / "preferences.jsonl").read_text().splitlines()]
    assert pair not in exported and exported


def test_judge_eval_scores_the_judge_against_the_reviewed_pairs(client: TestClient, run_dir: Path) -> None:
    accepted, flipped, dropped = first_ids(client, 3)
    decide(client, accepted, "accept")
    decide(client, flipped, "flip")
    decide(client, dropped, "drop")
    result = CliRunner().invoke(
        cli, ["judge-eval", str(run_dir), "--model", "scripted", "--json", str(run_dir / "j.json")]
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads((run_dir / "j.json").read_text())["evaluations"]
    assert report["n"] == 2  # the dropped pair carries no preference
    # The scripted judge prefers longer answers, exactly as when it labelled the run: it agrees with the
    # accepted pair and disagrees with the flipped one.
    assert report["accuracy"] == pytest.approx(0.5)


def test_judge_eval_on_a_run_nobody_reviewed_says_what_to_do(run_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["judge-eval", str(run_dir), "--model", "scripted"])
    assert result.exit_code == 1
    assert "no review decisions; review the pairs with `cai review" in result.output


# --- the command ------------------------------------------------------------------------------------------


def test_cai_review_serves_the_printed_url_and_rebuilds_the_dataset_when_stopped(run_dir: Path) -> None:
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "review", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = ""
        for _ in range(5):
            printed += process.stdout.readline()
            if "open: " in printed:
                break
        url = re.search(r"open: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", printed)
        assert url, printed
        base, token = url.groups()
        assert len(token) >= 20
        assert httpx.get(f"{base}/api/run").status_code == 401
        pair = httpx.get(f"{base}/api/pairs?limit=1", headers={"X-Review-Token": token}).json()["rows"][0]["id"]
        answer = httpx.post(
            f"{base}/api/pairs/{pair}/decision",
            headers={"X-Review-Token": token},
            json={"action": "drop", "revision": 0},
        )
        assert answer.status_code == 200
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert "dataset rebuilt with 1 review decisions" in rest
    assert pair not in set(load_from_disk(str(run_dir / "dataset"))["preferences"]["id"])


def _break_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("name", "line", "expected"),
    [
        ("labels.jsonl", '{"id": broken', ("labels.jsonl:3: not a label", "not JSON", "cai label")),
        ("labels.jsonl", '{"id": "x"}', ("labels.jsonl:3: not a label", "no field 'comparisons'", "cai label")),
        ("labels.jsonl", "[1, 2]", ("labels.jsonl:3: not a label", "not an object")),
        ("trajectories.jsonl", "{nope", ("trajectories.jsonl:3: not a trajectory", "not JSON", "cai generate --out")),
        ("trajectories.jsonl", '{"id": "x", "rounds": 3}', ("trajectories.jsonl:3: not a trajectory", "wrong type")),
        ("trajectories.jsonl", '"text"', ("trajectories.jsonl:3: not a trajectory", "not an object")),
        (REVIEWS, "garbage", ("reviews.jsonl:3: not a review decision", "fix or remove that line")),
    ],
)
def test_a_corrupt_line_when_review_starts_is_one_message_naming_the_file_and_line(
    run_dir: Path, name: str, line: str, expected: tuple[str, ...]
) -> None:
    if name == REVIEWS:
        (run_dir / REVIEWS).write_text("\n" * 4)
    _break_line(run_dir / name, 3, line)
    with socket.socket() as busy:  # if the line were let through, the server must fail, not serve forever
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = CliRunner().invoke(cli, ["review", str(run_dir), "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    for part in expected:
        assert part in result.output, result.output


def test_cai_review_refuses_a_folder_without_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(tmp_path)])
    assert result.exit_code == 1 and "no trajectories.jsonl" in result.output
