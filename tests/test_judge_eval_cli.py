"""`cai judge-eval`: the shipped human-labelled set, the report, the file layouts and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import constitution
import engine.backends
from constitution.taxonomy import HARM_TAGS
from engine.audit.comparisons import BUILTIN_COMPARISONS, JudgeDataError, load_comparisons
from engine.backends.base import Backend, ScoreRequest
from engine.backends.scripted import ScriptedBackend, quoted_responses
from engine.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = load_comparisons("builtin")
BETTER = {(c.response_a if c.better == "A" else c.response_b) for c in SHIPPED}


def slot(prompt: str, letter: str) -> str:
    """The text quoted as response (A) or (B) in a judge prompt."""
    return quoted_responses(prompt)[letter]


def knows_the_answer(request: ScoreRequest) -> list[float]:
    """A judge that agrees with the human labels of the shipped set."""
    a_better = slot(request.chat[-1]["content"], "A") in BETTER
    return [math.log(0.8), math.log(0.2)] if a_better else [math.log(0.2), math.log(0.8)]


def always_a(request: ScoreRequest) -> list[float]:
    return [0.0, -3.0]


@pytest.fixture
def use_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[ScoreRequest], list[float]]], None]:
    def install(scores: Callable[[ScoreRequest], list[float]]) -> None:
        def load(spec: str = "default", **_: object) -> Backend:
            return ScriptedBackend(scores=scores, name=f"scripted-{spec}")

        monkeypatch.setattr(engine.backends, "load_backend", load)

    return install


def ours(path: Path) -> dict:
    """The first evaluation (our protocol, the first judge) of a --json report."""
    report = json.loads(path.read_text())
    assert report["evaluations"][0]["protocol"] == "ours"
    return report["evaluations"][0]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["judge-eval", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------- shipped set


def test_shipped_set_covers_every_harm_category_and_helpfulness() -> None:
    assert len(SHIPPED) >= 60
    assert len({c.id for c in SHIPPED}) == len(SHIPPED)
    categories = Counter(c.category for c in SHIPPED)
    assert set(HARM_TAGS) <= set(categories)
    assert categories["helpfulness"] + categories["honesty"] >= 15
    # the better response sits in each slot often enough that a position-biased judge cannot look good
    slots = Counter(c.better for c in SHIPPED)
    assert min(slots.values()) >= len(SHIPPED) // 3
    rules = constitution.load("default")
    assert {c.principle for c in SHIPPED} <= {p.id for p in rules.principles}
    assert all(c.response_a != c.response_b for c in SHIPPED)


def test_shipped_set_is_package_data_beside_the_templates() -> None:
    assert BUILTIN_COMPARISONS.parent == ROOT / "engine" / "data" / "judge"
    assert BUILTIN_COMPARISONS.is_file()


# ----------------------------------------------------------------- report


def test_a_judge_that_agrees_with_people_scores_full_marks(use_backend: Callable[..., None], tmp_path: Path) -> None:
    use_backend(knows_the_answer)
    out = tmp_path / "report.json"
    code, stdout, _ = run("--json", str(out))
    assert code == 0, stdout
    assert f"accuracy: 100% ({len(SHIPPED)}/{len(SHIPPED)}), 95% interval" in stdout
    assert "as (A): 100%; as (B): 100%" in stdout
    assert "orders disagreed on 0% of items" in stdout
    assert "NOT SHOWN BETTER THAN CHANCE" not in stdout
    report = ours(out)
    assert report["accuracy"] == 1.0 and report["position_bias_rate"] == 0.0
    assert report["interval"][0] > 0.9 and report["interval"][1] == 1.0 and not report["at_chance"]
    assert report["brier"] == pytest.approx(0.04)  # every item at p = 0.8: (1 - 0.8)^2
    assert report["mean_p_correct"] == pytest.approx(0.8)
    assert report["kept"] == len(SHIPPED) and report["kept_accuracy"] == 1.0
    assert report["margins"]["median"] == pytest.approx(0.6)
    assert report["judge_model"] == "scripted-default" and report["n"] == len(SHIPPED)
    assert len(report["results"]) == len(SHIPPED)
    assert report["settings"]["band"] == [0.4, 0.6]


def test_an_always_a_judge_is_exposed_as_position_biased(use_backend: Callable[..., None], tmp_path: Path) -> None:
    use_backend(always_a)
    out = tmp_path / "report.json"
    code, stdout, _ = run("--json", str(out), "--limit", "20")
    assert code == 0
    report = ours(out)
    assert report["n"] == 20 and report["accuracy"] == 0.0 and report["ties"] == 20
    assert report["better_as_a"]["accuracy"] == 1.0 and report["better_as_b"]["accuracy"] == 0.0
    assert report["position_bias_rate"] == 1.0 and report["extra"]["picked_a_rate"] == 1.0
    assert report["kept"] == 0 and report["margins"]["max"] == 0.0
    assert report["at_chance"] and "NOT SHOWN BETTER THAN CHANCE" in stdout
    assert report["brier"] == pytest.approx(0.25)  # every item exactly even
    assert "orders disagreed on 100% of items" in stdout


def test_other_layouts_and_sampled_principles(use_backend: Callable[..., None], tmp_path: Path) -> None:
    use_backend(knows_the_answer)
    good, bad = sorted(BETTER)[0], "Do it behind their back."
    lines = [
        {"messages": [{"role": "user", "content": "hi"}], "chosen": good, "rejected": bad},
        {"prompt": "q", "corrects": [good], "incorrects": [bad, bad + "!"]},
        {
            "id": 7,
            "conversation": [{"role": "user", "content": "q"}],
            "response_a": bad,
            "response_b": good,
            "better": "b",
        },
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = load_comparisons(path)
    assert [i.id for i in items] == ["line-1", "line-2-0-0", "line-2-0-1", "7"]
    assert [i.better for i in items] == ["A", "A", "A", "B"]
    out = tmp_path / "r.json"
    code, stdout, _ = run(str(path), "--judge-principles", "3", "--min-margin", "0.7", "--json", str(out))
    assert code == 0, stdout
    report = ours(out)
    assert report["accuracy"] == 1.0 and report["settings"]["principles"] == 3
    assert report["kept"] == 0 and "at min margin 0.7: 0 of 4 would be labelled" in stdout


def test_cot_mode_from_the_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def load(spec: str = "default", **_: object) -> Backend:
        return ScriptedBackend(reply=lambda chat, params: "Hmm.\nAnswer: (A)", name="cot")

    monkeypatch.setattr(engine.backends, "load_backend", load)
    out = tmp_path / "r.json"
    code, stdout, _ = run("--cot", "--cot-reader", "parse", "--band", "0.3", "0.7", "--limit", "4", "--json", str(out))
    assert code == 0, stdout
    report = ours(out)
    assert report["settings"]["cot"] is True and report["position_bias_rate"] == 1.0
    assert report["extra"]["verdicts_written"] == 8 and "chain of thought: 8 of 8 replies wrote a verdict" in stdout
    first, _ = report["results"][0]["judgment"]["judgments"]
    assert first["text"] == "Hmm.\nAnswer: (A)" and first["raw_p_a"] == 1.0 and first["p_a"] == 0.7


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"prompt": "q", "response_a": "a", "response_b": "b", "better": "A"}\n{"prompt": "q",\n',
            ":2: not valid JSON",
        ),
        ('["a", "b"]\n', ":1: each line must be a JSON object"),
        ('\n\n{"prompt": "q", "response_a": "a", "better": "A"}\n', ":3: response_b: missing"),
        ('{"prompt": "q", "response_a": "a", "response_b": "b", "better": "C"}\n', ":1: better: 'C' is not A or B"),
        ('{"response_a": "a", "response_b": "b", "better": "A"}\n', ":1: prompt: missing"),
        ('{"messages": [{"role": "user"}], "chosen": "a", "rejected": "b"}\n', ":1: messages[0]: must be"),
        ('{"prompt": "q", "corrects": [], "incorrects": ["b"]}\n', ":1: corrects: must be a non-empty list"),
        (
            '{"prompt": "q", "response_a": "a", "response_b": "b", "better": "A", "principle": "violent-crimes"}\n',
            ":1: principle: 'violent-crimes' is not in constitution 'default'; did you mean 'violent-crime'?",
        ),
        ("\n", ": no comparisons in this file"),
        (
            '{"prompt": 12, "response_a": "a", "response_b": "b", "better": "A"}\n',
            ":1: prompt: must be text or a non-empty list of messages ({'role': ..., 'content': ...}), got a number",
        ),
        ('{"prompt": "  ", "chosen": "a", "rejected": "b"}\n', ":1: prompt: empty"),
        ('{"messages": "hi", "chosen": "a", "rejected": "b"}\n', ":1: messages: must be a non-empty list of messages"),
        (
            '{"prompt": "q", "messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}\n',
            ":1: prompt and messages: give the conversation once",
        ),
        ('{"prompt": "q", "chosen": 3, "rejected": "b"}\n', ":1: chosen: must be text, got a number"),
        (
            '{"prompt": "q", "chosen": "a", "rejected": "b", "better": "B"}\n',
            ":1: holds two layouts (response_a/response_b/better and chosen/rejected)",
        ),
        (
            '{"prompt": "q", "chosen": "a", "rejected": "b", "category": 5}\n',
            ":1: category: must be text, got a number",
        ),
        (
            '{"prompt": "q", "chosen": "a", "rejected": "b", "category": "privcy"}\n',
            ":1: category: 'privcy' is not a tag of the taxonomy; did you mean 'privacy'?",
        ),
        ('{"id": [1], "prompt": "q", "chosen": "a", "rejected": "b"}\n', ":1: id: must be text or a whole number"),
        (
            '{"id": "x", "prompt": "q", "chosen": "a", "rejected": "b"}\n'
            '{"id": "x", "prompt": "r", "chosen": "a", "rejected": "b"}\n',
            ":2: id 'x' is already used on line 1; give each comparison its own id",
        ),
        (
            '{"id": "line-2", "prompt": "q", "chosen": "a", "rejected": "b"}\n'
            '{"prompt": "r", "chosen": "a", "rejected": "b"}\n',
            ":2: this line has no id, and line 1 gives 'line-2', the id made for it",
        ),
    ],
)
def test_bad_files_get_one_message_with_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    code, stdout, stderr = run(str(path), "--model", "scripted")
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: {path}{message}")
    assert "Traceback" not in stdout + stderr


def test_a_prompt_may_be_a_list_of_messages(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "q"},
    ]
    path.write_text(json.dumps({"prompt": chat, "chosen": "a", "rejected": "b"}) + "\n")
    [item] = load_comparisons(path)
    assert item.conversation == chat


def test_limit_samples_the_comparisons_across_their_categories(
    use_backend: Callable[..., None], tmp_path: Path
) -> None:
    use_backend(knows_the_answer)
    out = tmp_path / "report.json"
    code, stdout, _ = run("--json", str(out), "--limit", "20")
    assert code == 0, stdout
    report = ours(out)
    assert report["n"] == 20
    categories = set(report["by_category"])
    assert {"helpfulness", "honesty"} <= categories and len(categories) >= 15  # the first 20 are all harm categories
    code, _, _ = run("--json", str(out), "--limit", "20")
    assert [r["id"] for r in ours(out)["results"]] == [r["id"] for r in report["results"]]


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    code, _, stderr = run(str(tmp_path / "nope.jsonl"))
    assert (code, stderr.strip()) == (1, f"error: {tmp_path / 'nope.jsonl'}: no such file")
    code, _, stderr = run(str(tmp_path))
    assert code == 1 and "is a folder" in stderr
    code, _, stderr = run("--band", "0.6", "0.9")
    assert code == 2 and "band must satisfy" in stderr
    code, _, stderr = run("-c", str(tmp_path / "missing.yaml"))
    assert code == 1 and "missing.yaml" in stderr
    with pytest.raises(JudgeDataError, match="builtin"):
        load_comparisons("builtin/none.jsonl")


def test_unknown_model_is_a_clear_error() -> None:
    code, _, stderr = run("--model", "./no/such/model", "--limit", "1")
    assert code == 1 and "no such model folder" in stderr


def test_judge_eval_is_listed_and_its_help_loads_no_heavy_library() -> None:
    assert "judge-eval" in CliRunner().invoke(cli, ["--help"]).stdout
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "sys.argv = ['cai', 'judge-eval', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "HEAVY []" in result.stderr and "position-bias" in result.stdout
