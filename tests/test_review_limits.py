"""The review server's limits: request bodies, tokens, and odd values answered with a clear 4xx, never a 500.

Body limits are checked against the real server (uvicorn on a loopback port)
over a raw socket, so the test sees what the server reads and when it answers.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from engine.cli import cli
from engine.records import REVIEWS
from engine.review.pairs import PairIndex
from engine.review.server import MAX_BODY, MAX_NOTE, MIN_TOKEN, BackgroundServer, create_app, token_problem
from tests.test_review import make_run

TOKEN = "limits-test-token-0123"
AUTH = {"X-Review-Token": TOKEN}
SOCKET_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("limits") / "run", limit=4)


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(template, out)
    return out


@pytest.fixture
def server(run_dir: Path) -> Iterator[BackgroundServer]:
    background = BackgroundServer(create_app(run_dir, TOKEN))
    try:
        yield background
    finally:
        background.stop()


@pytest.fixture
def client(run_dir: Path) -> TestClient:
    return TestClient(create_app(run_dir, TOKEN, hosts=("testserver",)))


def pair_of(run_dir: Path) -> str:
    return PairIndex(run_dir).entries[0].id


def exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request head and body chunks (without necessarily finishing the body); return what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed while we were still sending: fine
                break
        answer = b""
        try:
            while not answer.endswith(b"}") and (data := sock.recv(65536)):
                answer += data
        except ConnectionResetError:
            pass
        return answer


def head(pair: str, extra: str) -> bytes:
    return (
        f"POST /api/pairs/{pair}/decision HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Review-Token: {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


# --- request bodies ---------------------------------------------------------------------------------------


def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(server: BackgroundServer, run_dir: Path) -> None:
    # 10 GB announced, nothing sent: a server that reads first would wait (and the socket time out).
    answer = exchange(server.port, head(pair_of(run_dir), f"Content-Length: {10 * 1024**3}\r\n"), [])
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"request body over 64 KiB" in body
    assert not (run_dir / REVIEWS).exists()


def test_a_chunked_body_is_refused_once_it_passes_the_cap(server: BackgroundServer, run_dir: Path) -> None:
    # Chunks past the cap, and no end chunk: the server must answer from what it has read, not wait for more.
    chunk = b"x" * 16384
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 2)
    answer = exchange(server.port, head(pair_of(run_dir), "Transfer-Encoding: chunked\r\n"), chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"request body over 64 KiB" in answer
    assert not (run_dir / REVIEWS).exists()


def test_a_body_within_the_cap_still_works_chunked_or_not(server: BackgroundServer, run_dir: Path) -> None:
    body = json.dumps({"action": "note", "revision": 0, "note": "\u0001" * MAX_NOTE}).encode()  # 6 bytes a char
    assert len(body) < MAX_BODY
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = exchange(server.port, head(pair_of(run_dir), "Transfer-Encoding: chunked\r\n"), [chunked])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads((run_dir / REVIEWS).read_text())["note"] == "\u0001" * MAX_NOTE


def test_an_oversized_body_gets_a_json_413_through_the_app(client: TestClient, run_dir: Path) -> None:
    note = "x" * (MAX_BODY + 1)
    answer = client.post(f"/api/pairs/{pair_of(run_dir)}/decision", headers=AUTH, json={"action": "note", "note": note})
    assert answer.status_code == 413
    assert "request body over 64 KiB" in answer.json()["error"]
    assert answer.headers["content-security-policy"]
    assert not (run_dir / REVIEWS).exists()


def test_without_the_token_even_a_huge_body_is_refused_unread(server: BackgroundServer, run_dir: Path) -> None:
    request = head(pair_of(run_dir), f"Content-Length: {10 * 1024**3}\r\n").replace(TOKEN.encode(), b"wrong")
    assert exchange(server.port, request, []).startswith(b"HTTP/1.1 403")


# --- odd values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "accept", "revision": True}, "revision"),
        ({"action": "accept", "revision": "0"}, "revision"),
        ({"action": "accept", "revision": 0.0}, "revision"),
        ({"action": "accept", "revision": None}, "revision"),
        ({"action": None, "revision": 0}, "action"),
        ({"action": "note", "revision": 0, "note": 5}, "note"),
        ({"action": "note", "revision": 0, "note": "x" * (MAX_NOTE + 1)}, "at most 10000 characters"),
    ],
)
def test_odd_values_are_a_422_with_the_field_named(
    client: TestClient, run_dir: Path, body: dict[str, object], message: str
) -> None:
    answer = client.post(f"/api/pairs/{pair_of(run_dir)}/decision", headers=AUTH, json=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["error"]
    assert not (run_dir / REVIEWS).exists()


def test_an_unknown_pair_is_named_briefly(client: TestClient) -> None:
    answer = client.get("/api/pairs/" + "x" * 5000, headers=AUTH)
    assert answer.status_code == 404
    assert answer.json()["error"].startswith("no pair 'xxx") and len(answer.json()["error"]) < 200
    posted = client.post("/api/pairs/" + "y" * 5000 + "/decision", headers=AUTH, json={"action": "drop", "revision": 0})
    assert posted.status_code == 404 and len(posted.json()["error"]) < 200


def test_deeply_nested_json_is_a_4xx(client: TestClient, run_dir: Path) -> None:
    body = b"[" * 30_000 + b"]" * 30_000
    answer = client.post(
        f"/api/pairs/{pair_of(run_dir)}/decision", headers={**AUTH, "Content-Type": "application/json"}, content=body
    )
    assert 400 <= answer.status_code < 500 and answer.json()["error"]


# --- tokens -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("x", "a token of 1 characters is easy to guess; use at least 16"),
        ("", "a token of 0 characters"),
        ("s3cret-token", "a token of 12 characters"),
        ("sixteen-chars-ok&admin=1", "holds '&'"),
        ("sixteen chars with space", "holds ' '"),
        ("sixteen-chars-#fragment", "holds '#'"),
        ("sixteen-chars-é-unicode", "holds 'é'"),
    ],
)
def test_weak_or_url_breaking_tokens_are_refused_with_how_to_make_one(tmp_path: Path, token: str, message: str) -> None:
    # The token is checked first; the folder holds no run, so a token let through ends in another error
    # (exit 1) instead of a server that would serve forever inside the test.
    for args, env in ((["--token", token], {}), ([], {"CAI_REVIEW_TOKEN": token})):
        if not token and env:
            continue  # an empty variable is the same as none
        result = CliRunner().invoke(cli, ["review", str(tmp_path), *args], env=env)
        assert result.exit_code == 2, result.output
        assert message in result.output and "secrets.token_urlsafe" in result.output, result.output
        assert "Traceback" not in result.output


def test_good_tokens_pass() -> None:
    assert token_problem("a" * MIN_TOKEN) is None
    assert token_problem("Az09-_.~" * 3) is None
