"""The OpenAI-compatible backend against a real (fake, misbehaving) HTTP server on loopback.

The server (tests/fake_openai_server.py) is real HTTP in a thread, not a mock
of the client: requests in flight, retries, timeouts, dropped connections and
garbage replies all go through httpx and the socket.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.backends import load_backend
from engine.backends.base import BackendError, SamplingParams, ScoreRequest
from engine.backends.llama_server import free_port
from engine.backends.openai_compat import ENVIRONMENT, OpenAIBackend, parse_spec
from engine.backends.openai_scoring import TokenLogprobs, option_logprobs, verdict_logprobs
from engine.cli import cli
from engine.config import GenerateConfig
from engine.generate import generate
from tests.fake_openai_server import FakeOpenAIServer, default_reply, tokenize

FAST = {"timeout": 2.0, "max_retries": 2, "backoff": 0.01, "max_backoff": 0.05}
JUDGE_PROMPT = (
    "Which is better?\n<<<RESPONSE A>>>\nshort\n<<<END RESPONSE A>>>\n<<<RESPONSE B>>>\nx\n<<<END RESPONSE B>>>"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def make(server: FakeOpenAIServer) -> Iterator[Callable[..., OpenAIBackend]]:
    made: list[OpenAIBackend] = []

    def build(**options: Any) -> OpenAIBackend:
        settings: dict[str, Any] = {"base_url": server.url, "max_concurrency": 4, **FAST, **options}
        backend = OpenAIBackend(settings.pop("model", "fake-model"), **settings)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Question {i}?"}] for i in range(n)]


GREEDY = SamplingParams(max_new_tokens=64, temperature=0)
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- generate


def test_replies_come_back_in_order_with_a_bounded_number_in_flight(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    server.delay = 0.15
    batch = chats(12)
    start = time.perf_counter()
    out = make(max_concurrency=4).generate(batch, GREEDY)
    elapsed = time.perf_counter() - start
    expected = [default_reply({"messages": chat, "seed": 0}) for chat in batch]
    assert [c.text for c in out] == expected
    assert server.max_in_flight == 4
    assert elapsed < 12 * 0.15 * 0.6  # concurrent, not one after another

    server.max_in_flight = 0
    make(max_concurrency=1).generate(chats(3), GREEDY)
    assert server.max_in_flight == 1


def test_sampling_parameters_and_stop_strings_reach_the_server(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0.3, top_p=0.9, seed=7, stop=("to:", "\n\n"))
    [completion] = make().generate(chats(1), params)
    sent = server.requests[-1]
    assert sent["model"] == "fake-model" and sent["messages"] == chats(1)[0]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (12, 0.3, 0.9, 7)
    assert sent["stop"] == ["to:", "\n\n"] and "logprobs" not in sent
    expected = default_reply({"messages": chats(1)[0], "seed": 7}).split("to:")[0]
    assert completion.text == expected and expected.startswith("Fake reply") and expected.endswith("-7 ")
    assert completion.tokens == len(tokenize(expected))  # the server's usage.completion_tokens


def test_stop_strings_are_cut_when_the_server_ignores_them(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    server.honour_stop = False
    [completion] = make().generate(chats(1), SamplingParams(stop=(" to:",)))
    assert completion.text.startswith("Fake reply") and "to:" not in completion.text


# ---------------------------------------------------------------- retries and faults


def test_429_waits_what_retry_after_says_then_succeeds(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    server.plan.extend(["429"])
    server.retry_after = "0.4"
    backend = make(max_backoff=5.0)
    start = time.perf_counter()
    [completion] = backend.generate(chats(1), GREEDY)
    assert time.perf_counter() - start >= 0.4
    assert completion.text.startswith("Fake reply") and server.attempts == 2


@pytest.mark.parametrize("behaviour", ["500", "503", "429", "garbage", "truncated", "badshape", "drop", "hang"])
def test_transient_faults_are_retried(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend], behaviour: str
) -> None:
    server.plan.extend([behaviour, behaviour])
    [completion] = make(timeout=0.3).generate(chats(1), GREEDY)
    assert completion.text == default_reply({"messages": chats(1)[0], "seed": 0})
    assert server.attempts == 3


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("500", 'HTTP 500: \'{"error": {"message": "fake 500"'),
        ("garbage", "the reply is not JSON: '<html><body>502 Bad Gateway"),
        ("truncated", 'the reply is not JSON: \'{"id": "x", "choices": [{"message": {"content": "Hel\''),
        ("badshape", 'the reply is not a chat completion (KeyError: \'choices\'): \'{"id": "x"'),
        ("drop", "connection failed (RemoteProtocolError: Server disconnected"),
        ("hang", "no reply within 0.3 s (ReadTimeout)"),
    ],
)
def test_persistent_faults_stop_with_a_message_naming_url_failure_and_tries(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend], behaviour: str, says: str
) -> None:
    server.default = behaviour
    backend = make(timeout=0.3, max_concurrency=1)
    with pytest.raises(BackendError) as caught:
        backend.generate(chats(1), GREEDY)
    message = str(caught.value)
    assert message.startswith(f"{server.url}/chat/completions: {says}")
    assert "gave up after 3 tries" in message and "rerun the same command" in message
    assert server.attempts == 3


@pytest.mark.parametrize(("behaviour", "says"), [("400", "rejected the request"), ("401", "CAI_API_KEY")])
def test_client_errors_are_not_retried(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend], behaviour: str, says: str
) -> None:
    server.plan.append(behaviour)
    with pytest.raises(BackendError, match=f"HTTP {behaviour}: .*fake {behaviour}.*{says}"):
        make().generate(chats(1), GREEDY)
    assert server.attempts == 1


def test_unknown_model_names_what_the_server_serves(make: Callable[..., OpenAIBackend]) -> None:
    with FakeOpenAIServer(models=["llama-3-8b", "qwen-7b"]) as other:
        other.plan.append("404")
        backend = make(base_url=other.url, model="lama-3-8b")
        with pytest.raises(BackendError, match=r"HTTP 404.*check the model name 'lama-3-8b' \(it serves: llama-3-8b"):
            backend.generate(chats(1), GREEDY)


def test_the_first_request_that_fails_for_good_cancels_the_rest(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    server.default = "500"
    with pytest.raises(BackendError, match="gave up after 2 tries"):
        make(max_concurrency=2, max_retries=1).generate(chats(40), GREEDY)
    time.sleep(0.1)
    assert server.attempts <= 8  # not 40 requests x 2 tries

    # a fatal reply ends the call at once, and the request in flight beside it stops retrying
    server.attempts = 0
    server.plan.append("400")
    backend = make(max_concurrency=2, max_retries=5, backoff=0.3, max_backoff=1.0)
    start = time.perf_counter()
    with pytest.raises(BackendError, match="HTTP 400"):
        backend.generate(chats(2), GREEDY)
    assert time.perf_counter() - start < 0.25
    time.sleep(0.8)
    assert server.attempts == 2


def test_a_server_that_dies_mid_batch_stops_the_call_and_the_backend_recovers_with_it(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    server.fail_after = 3
    backend = make(max_concurrency=2)
    with pytest.raises(BackendError, match="connection failed"):
        backend.generate(chats(8), GREEDY)
    assert server.replies == 3
    server.dead, server.fail_after = False, None
    assert len(backend.generate(chats(8), GREEDY)) == 8


def test_ctrl_c_against_a_hanging_server_exits_at_once(server: FakeOpenAIServer) -> None:
    server.default, server.hang_seconds = "hang", 30.0
    code = (
        "from engine.backends.base import SamplingParams\n"
        "from engine.backends.openai_compat import OpenAIBackend\n"
        f"backend = OpenAIBackend('fake-model', base_url={server.url!r}, timeout=60)\n"
        "print('ready', flush=True)\n"
        "backend.generate([[{'role': 'user', 'content': 'hi'}]] * 4, SamplingParams())\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 10
    while server.attempts < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    start = time.perf_counter()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=10)
    assert time.perf_counter() - start < 3  # not the 60 s timeout: no worker thread holds the exit
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr


def test_an_unreachable_server_fails_when_the_backend_loads() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.perf_counter()
    with pytest.raises(BackendError) as caught:
        OpenAIBackend("m", base_url=url, **FAST)
    assert str(caught.value).startswith(f"{url}/models: connection failed (ConnectError")
    assert time.perf_counter() - start < 2


def test_the_key_is_sent_but_never_shown(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("CAI_API_KEY", "sk-cai-secret")
    backend = OpenAIBackend("fake-model", base_url=server.url, **FAST)
    backend.generate(chats(1), GREEDY)
    assert server.headers[-1]["Authorization"] == "Bearer sk-cai-secret"  # CAI_API_KEY first
    server.default = "500"
    with pytest.raises(BackendError) as caught:
        backend.generate(chats(1), GREEDY)
    shown = json.dumps(backend.describe()) + str(caught.value) + repr(backend)
    assert "secret" not in shown
    backend.close()

    monkeypatch.delenv("CAI_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    server.default = "ok"
    keyless = OpenAIBackend("fake-model", base_url=server.url, **FAST)
    keyless.generate(chats(1), GREEDY)
    assert "Authorization" not in server.headers[-1]
    keyless.close()


# ---------------------------------------------------------------- specs


def test_spec_parsing() -> None:
    assert parse_spec("openai:gpt-4o-mini") == ("gpt-4o-mini", None)
    assert parse_spec("openai:Qwen/Qwen2.5-7B@http://10.0.0.5:8000/v1") == (
        "Qwen/Qwen2.5-7B",
        "http://10.0.0.5:8000/v1",
    )
    assert parse_spec("openai:me@org/model@https://host/v1") == ("me@org/model", "https://host/v1")
    with pytest.raises(BackendError, match="no model name"):
        parse_spec("openai:@http://host/v1")


def test_load_backend_finds_the_server_in_the_spec_the_argument_or_the_environment(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_spec = load_backend(f"openai:fake-model@{server.url}", batch_size=3)
    assert in_spec.describe() == {
        "backend": "OpenAIBackend",
        "model": "openai:fake-model",
        "base_url": server.url,
        "max_concurrency": 3,
        "score": "logprobs",
    }
    assert load_backend("openai:fake-model", base_url=server.url).describe()["base_url"] == server.url
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/")
    from_env = load_backend("openai:fake-model")
    assert from_env.describe()["base_url"] == server.url
    assert from_env.generate(chats(1), GREEDY)[0].text.startswith("Fake reply")
    # user:password in the address is used but not recorded
    with_login = OpenAIBackend("fake-model", base_url=server.url.replace("//", "//me:pw@"), check=False)
    assert with_login.describe()["base_url"] == server.url


@pytest.mark.parametrize(
    ("spec", "env", "says"),
    [
        ("http://127.0.0.1:8000/v1", {}, "use --model openai:NAME --base-url http://127.0.0.1:8000/v1"),
        ("openai:m@ftp://host", {}, "not a server address"),
        ("openai:m", {"CAI_OPENAI_TIMEOUT": "soon"}, r"\$CAI_OPENAI_TIMEOUT='soon': must be a number"),
        ("openai:m", {"CAI_OPENAI_MAX_RETRIES": "-1"}, "must be at least 0"),
        ("openai:m", {"CAI_OPENAI_SCORE": "guess"}, "use logprobs or parse"),
    ],
)
def test_bad_specs_and_settings_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, spec: str, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BackendError, match=says):
        load_backend(spec)


# ---------------------------------------------------------------- scoring


def tok(text: str, logprob: float, *alternatives: tuple[str, float]) -> TokenLogprobs:
    top = ((text.encode(), logprob), *((t.encode(), lp) for t, lp in alternatives))
    return TokenLogprobs(text.encode(), logprob, top)


def test_options_are_read_where_the_greedy_reply_tells_them_apart() -> None:
    # "(" then the letter, as SmolLM2 splits it: the shared "(" is on the path of both options
    split = [tok("(", -0.1, ("The", -3.0)), tok("A", -0.2, ("B", -1.8)), tok(")", -0.01)]
    assert option_logprobs(["(A)", "(B)"], split) == pytest.approx([-0.3, -1.9])
    # one token "(A" as tiktoken has it, plus a split path through "(" that is credited too
    fused = [tok("(A", -0.5, ("(B", -1.5), ("(", -2.0)), tok(")", -0.01)]
    assert option_logprobs(["(A)", "(B)"], fused) == pytest.approx([-0.5, -1.5])
    # an option not among the alternatives gets an upper bound: the least likely alternative shown
    assert option_logprobs(["(Yes)", "(No)"], [tok("(", 0.0), tok("No", -0.01, ("zz", -9.0))]) == pytest.approx(
        [-9.0, -0.01]
    )
    # ... or the mass not shown, when that is smaller
    [yes, no] = option_logprobs(["(Yes)", "(No)"], [tok("(", 0.0), tok("No", math.log(0.999))])
    assert no == pytest.approx(math.log(0.999)) and yes == pytest.approx(math.log(0.001), abs=1e-6)
    # a reply that starts otherwise, with no option among the alternatives: unreadable
    assert all(math.isnan(v) for v in option_logprobs(["(A)", "(B)"], [tok("I", -0.1, ("The", -2.0))]))
    # multi-byte text is compared as bytes, even where a token holds half a character
    e_acute = "é".encode()
    half = [TokenLogprobs(e_acute[:1], -0.1, ((e_acute[:1], -0.1),)), tok(e_acute[1:].decode("latin-1"), -0.1)]
    half[1] = TokenLogprobs(e_acute[1:] + b"t", -0.2, ((e_acute[1:] + b"t", -0.2), (e_acute[1:] + b"r", -1.0)))
    assert option_logprobs(["ét", "ér"], half) == pytest.approx([-0.3, -1.1])


def test_score_through_the_server_uses_logprobs(server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]) -> None:
    requests = [
        ScoreRequest([{"role": "user", "content": JUDGE_PROMPT}], ("(A)", "(B)")),
        ScoreRequest([{"role": "user", "content": "Violates? Answer (Yes) or (No)."}], ("(Yes)", "(No)")),
    ]
    [a_b, yes_no] = make().score(requests)
    assert a_b == pytest.approx([-0.1, -2.05])  # the fake judge prefers the longer response, (A)
    assert yes_no == pytest.approx([-2.05, -0.1])
    sent = server.requests[0]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 20
    assert sent["temperature"] == 0 and sent["max_tokens"] == 2


def test_no_logprobs_is_a_clear_error_unless_the_parse_fallback_is_on(
    server: FakeOpenAIServer, make: Callable[..., OpenAIBackend]
) -> None:
    server.default = "nologprobs"
    request = ScoreRequest([{"role": "user", "content": JUDGE_PROMPT}], ("(A)", "(B)"))
    with pytest.raises(BackendError, match=r"no log-probabilities.*CAI_OPENAI_SCORE=parse"):
        make().score([request])
    assert server.attempts == 1  # not retried: asking again will not help

    fallback = make(score_mode="parse")
    assert fallback.score([request]) == [[0.0, -math.inf]]
    assert "logprobs" not in server.requests[-1] and server.requests[-1]["max_tokens"] == 4
    server.reply = lambda request: "I would rather not say."
    assert all(math.isnan(v) for v in fallback.score([request])[0])


@pytest.mark.parametrize(
    ("reply", "options", "chosen"),
    [
        ("(B) because it is kinder", ("(A)", "(B)"), 1),
        ("  (A)", ("(A)", "(B)"), 0),
        ("B) is better", ("(A)", "(B)"), 1),
        ("A", ("(A)", "(B)"), 0),
        ("Yes, it does", ("(Yes)", "(No)"), 0),
        ("No it does not", ("(Yes)", "(No)"), 1),
        ("A response that", ("(A)", "(B)"), None),  # an article, not a verdict
        ("Nothing to add", ("(Yes)", "(No)"), None),
        ("(C)", ("(A)", "(B)"), None),
    ],
)
def test_written_verdicts(reply: str, options: tuple[str, ...], chosen: int | None) -> None:
    scores = verdict_logprobs(options, reply)
    if chosen is None:
        assert all(math.isnan(v) for v in scores)
    else:
        assert scores[chosen] == 0.0 and all(v == -math.inf for i, v in enumerate(scores) if i != chosen)


# ---------------------------------------------------------------- end to end


def write_prompts(path: Path, n: int) -> Path:
    lines = [json.dumps({"id": f"p{i:02d}", "prompt": f"How do I do thing {i}?"}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("pipeline", ["auto", "off"])
@pytest.mark.parametrize("fault", ["drop", "hang", "garbage"])
def test_cli_run_stops_on_a_failing_server_and_resumes_against_a_healthy_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, pipeline: str
) -> None:
    monkeypatch.setenv("CAI_OPENAI_MAX_RETRIES", "1")
    monkeypatch.setenv("CAI_OPENAI_BACKOFF", "0.01")
    monkeypatch.setenv("CAI_OPENAI_TIMEOUT", "0.5")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    out = tmp_path / "run"

    def cai(url: str) -> Any:
        args = ["generate", "-o", str(out), "--model", "openai:fake-model", "--base-url", url, "-p", str(prompts)]
        args += ["--revisions", "1", "--chunk-size", "2", "--batch-size", "4", "--max-new-tokens", "24"]
        args += ["--judge-check", "none"]  # the fault is timed in requests: no calibration requests before the run
        args += ["--pipeline", pipeline]
        return CliRunner().invoke(cli, args)

    with FakeOpenAIServer() as failing:
        failing.fail_after, failing.fail_with = 12, fault  # a chunk takes 10 requests: dies inside the second
        first = cai(failing.url)
    assert first.exit_code == 1, first.output
    line = first.stderr.strip().splitlines()[-1]  # after the progress bar: one line
    assert first.stderr.count("error") == 1 and line.startswith(f"error: {failing.url}/")
    assert "gave up after 2 tries" in line
    assert "Traceback" not in first.output
    done = ids_in(out / "trajectories.jsonl")
    if pipeline == "off":
        assert done == ["p00", "p01"]
    else:  # rows are written as they finish: some of the first four (each takes 3 of the 12 requests)
        assert 0 < len(done) < 6 and len(set(done)) == len(done) and set(done) <= {"p00", "p01", "p02", "p03"}

    with FakeOpenAIServer() as healthy:  # restarted elsewhere: --base-url is not part of the run's identity
        second = cai(healthy.url)
    assert second.exit_code == 0, second.output
    assert f"{6 - len(done)} new, {len(done)} already there" in second.stdout
    assert sorted(ids_in(out / "trajectories.jsonl")) == [f"p{i:02d}" for i in range(6)]  # each exactly once
    labels = ids_in(out / "labels.jsonl")
    assert sorted(labels) == [f"p{i:02d}" for i in range(6)]
    row = json.loads((out / "trajectories.jsonl").read_text().splitlines()[-1])
    assert row["models"]["policy"]["base_url"] == healthy.url and row["final"].startswith("Fake reply")


def test_generate_with_the_server_in_the_spec(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = GenerateConfig(
        out=tmp_path / "run",
        model=f"openai:fake-model@{server.url}",
        prompts=str(write_prompts(tmp_path / "prompts.jsonl", 3)),
        revisions=1,
        max_new_tokens=24,
    )
    summary = generate(config, progress=False)
    assert summary.rows == 3 and summary.labels is not None and summary.labels.rows == 3
    assert summary.pairs == 3  # the fake judge prefers the longer response in both orders
