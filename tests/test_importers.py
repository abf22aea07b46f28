"""Importing the three published constitution formats (``constitution.importers``, ``cai principles import``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import constitution
from constitution import Constitution, ConstitutionError, Message
from constitution.importers import DEFAULT_COMPARISON, FORMATS, import_file
from engine.cli import cli

DATA = Path(__file__).parent / "data" / "import"
CRITIQUE_REVISION = DATA / "critique_revision.json"
CONSTITUTIONS = DATA / "constitutions.json"
COMPARISONS = DATA / "comparisons.json"
SAMPLES = {"critique-revision": CRITIQUE_REVISION, "constitutions": CONSTITUTIONS, "comparisons": COMPARISONS}


def raw(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_import(fmt: str, source: Path, out: Path, *extra: object) -> Result:
    return invoke("principles", "import", fmt, source, "-o", out, *extra)


def assert_clean_failure(result: Result, codes: tuple[int, ...] = (1, 2)) -> None:
    """Failed with a usage/user error code, a message, and no traceback."""
    assert result.exit_code in codes, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.output.strip(), "a failure must say why"


def write_json(tmp_path: Path, data: Any, name: str = "input.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- sample data itself


def test_sample_inputs_have_the_documented_shape() -> None:
    cr = raw(CRITIQUE_REVISION)
    assert len(cr) >= 4
    assert any(len(entry["prompt"]) == 2 for entry in cr.values())
    cons = raw(CONSTITUTIONS)
    assert cons["constitutions"] and cons["system_chat"]
    comps = raw(COMPARISONS)
    assert len(comps) >= 3
    assert all(c.strip().startswith("Choose the response that") for c in comps)


# --------------------------------------------------------------------------- every format: validates, CLI writes it


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_file_returns_a_valid_constitution(fmt: str) -> None:
    c, _warnings = import_file(fmt, SAMPLES[fmt])
    assert isinstance(c, Constitution)
    # the returned object survives re-validation unchanged
    assert Constitution.model_validate(c.model_dump()) == c
    assert c.schema_version == 1
    assert c.principles
    assert len({p.id for p in c.principles}) == len(c.principles)
    assert all(p.tags == ["general"] for p in c.principles)
    assert all(p.title.strip() and len(p.title) <= 60 for p in c.principles)
    # defaults: id slugged from the file name, name is the file name
    assert c.id == SAMPLES[fmt].stem.replace("_", "-")
    assert c.name == SAMPLES[fmt].stem
    assert fmt in c.description


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_import_writes_yaml_that_validates(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    result = run_import(fmt, SAMPLES[fmt], out)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert out.read_text(encoding="utf-8").startswith(f"# Imported from {SAMPLES[fmt].name}")
    n = len(import_file(fmt, SAMPLES[fmt])[0].principles)
    assert f"wrote {out}: {n} principles" in result.stdout
    check = invoke("principles", "validate", out)
    assert check.exit_code == 0, check.output
    assert check.stdout.startswith("ok  ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_yaml_loads_with_the_same_content_hash(fmt: str, tmp_path: Path) -> None:
    """Regression: file-wide examples (from system_chat) once made the loaded hash differ from the imported one."""
    imported, _ = import_file(fmt, SAMPLES[fmt])
    out = tmp_path / "out.yaml"
    result = run_import(fmt, SAMPLES[fmt], out)
    assert result.exit_code == 0, result.output
    loaded = constitution.load(out)
    assert loaded.content_hash == imported.content_hash
    # what `import` prints is what `validate` prints for the written file
    printed = re.search(r"sha256 ([0-9a-f]{12})", result.stdout)
    validated = re.search(r"sha256 ([0-9a-f]{12})", invoke("principles", "validate", out).stdout)
    assert printed and validated
    assert printed.group(1) == validated.group(1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_yaml_keeps_every_text(fmt: str, tmp_path: Path) -> None:
    """Whatever the hash does, the principles' texts survive the YAML round trip exactly."""
    imported, _ = import_file(fmt, SAMPLES[fmt])
    out = tmp_path / "out.yaml"
    assert run_import(fmt, SAMPLES[fmt], out).exit_code == 0
    loaded = constitution.load(out)
    fields = ("id", "title", "tags", "critique_request", "revision_request", "comparison_question")
    assert [[getattr(p, f) for f in fields] for p in loaded.principles] == [
        [getattr(p, f) for f in fields] for p in imported.principles
    ]
    assert (loaded.id, loaded.name, loaded.version) == (imported.id, imported.name, imported.version)


# --------------------------------------------------------------------------- critique-revision


def test_critique_revision_texts_are_carried_over_stripped() -> None:
    c, warnings = import_file("critique-revision", CRITIQUE_REVISION)
    assert warnings == []
    expected = []
    for key, entry in raw(CRITIQUE_REVISION).items():
        base = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
        prompts = entry["prompt"]
        for n, prompt in enumerate(prompts, 1):
            pid = base if len(prompts) == 1 else f"{base}-{n}"
            expected.append((pid, prompt.strip(), entry["edit_request"].strip()))
    assert [(p.id, p.critique_request, p.revision_request) for p in c.principles] == expected
    # whitespace around the texts in the sample is gone, nothing else changed
    assert c.principles[0].critique_request.startswith("Identify any part")
    assert not c.principles[1].revision_request.endswith("\n")
    assert c.principles[3].id == "harmful-two"  # "Harmful Two" slugged


def test_a_list_of_two_prompts_yields_two_principles() -> None:
    c, _ = import_file("critique-revision", CRITIQUE_REVISION)
    entry = raw(CRITIQUE_REVISION)["harmful1"]
    pair = [p for p in c.principles if p.id.startswith("harmful1")]
    assert [p.id for p in pair] == ["harmful1-1", "harmful1-2"]
    assert [p.critique_request for p in pair] == [t.strip() for t in entry["prompt"]]
    assert {p.revision_request for p in pair} == {entry["edit_request"].strip()}
    assert len(c.principles) == sum(len(e["prompt"]) for e in raw(CRITIQUE_REVISION).values())


def test_a_single_prompt_string_is_accepted(tmp_path: Path) -> None:
    source = write_json(tmp_path, {"only": {"prompt": "Identify the problem.", "edit_request": "Fix it."}})
    c, _ = import_file("critique-revision", source)
    assert [(p.id, p.critique_request, p.revision_request) for p in c.principles] == [
        ("only", "Identify the problem.", "Fix it.")
    ]


# --------------------------------------------------------------------------- constitutions


def test_constitutions_texts_are_carried_over_stripped() -> None:
    c, _ = import_file("constitutions", CONSTITUTIONS)
    entries = raw(CONSTITUTIONS)["constitutions"]
    assert [(p.id, p.critique_request, p.revision_request) for p in c.principles] == [
        (f"principle-{i:02d}", e["critic"].strip(), e["revision"].strip()) for i, e in enumerate(entries, 1)
    ]


def test_system_chat_turns_into_examples() -> None:
    c, _ = import_file("constitutions", CONSTITUTIONS)
    chats = raw(CONSTITUTIONS)["system_chat"]
    valid = chats[:2]
    assert len(c.examples) == len(valid)
    for example, chat in zip(c.examples, valid, strict=True):
        # conversation = every turn before the last four; then critique and revision
        assert example.conversation == [Message(role=m["role"], content=m["content"].strip()) for m in chat[:-4]]
        assert example.critique == chat[-3]["content"].strip()
        assert example.revision == chat[-1]["content"].strip()
        assert example.conversation[-1].role == "assistant"
    assert len(c.examples[0].conversation) == 2
    assert len(c.examples[1].conversation) == 4  # a multi-turn chat keeps all its earlier turns
    # stripped: the sample revision has spaces around it
    assert c.examples[0].revision.startswith("I can't help")


def test_loaded_principles_carry_the_imported_examples(tmp_path: Path) -> None:
    imported, _ = import_file("constitutions", CONSTITUTIONS)
    out = tmp_path / "out.yaml"
    assert run_import("constitutions", CONSTITUTIONS, out).exit_code == 0
    loaded = constitution.load(out)
    assert all(p.examples == imported.examples for p in loaded.principles)


def test_malformed_system_chat_entry_is_skipped_with_a_warning() -> None:
    _, warnings = import_file("constitutions", CONSTITUTIONS)
    assert len(warnings) == 1
    assert warnings[0].startswith("system_chat[2] skipped")


@pytest.mark.parametrize(
    "chat",
    [
        "not a list",
        [{"role": "user", "content": "too short"}],
        [{"role": "user", "content": f"turn {i}"} for i in range(6)],  # roles don't alternate at the end
        [{"role": "user", "content": "a"}, {"role": "assistant"}] + [{"role": "user", "content": "x"}] * 4,
        # the conversation before the last four turns ends with the user, not the assistant
        [
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "user", "content": "critique?"},
            {"role": "assistant", "content": "critique"},
            {"role": "user", "content": "revise?"},
            {"role": "assistant", "content": "revision"},
        ],
    ],
    ids=["text", "short", "roles", "no-content", "no-assistant-turn"],
)
def test_each_kind_of_malformed_chat_is_a_warning_not_an_error(chat: Any, tmp_path: Path) -> None:
    data = {"constitutions": [{"critic": "Critique.", "revision": "Revise."}], "system_chat": [chat]}
    c, warnings = import_file("constitutions", write_json(tmp_path, data))
    assert c.examples == []
    assert len(warnings) == 1
    assert "system_chat[0]" in warnings[0]


def test_cli_reports_the_skipped_chat_as_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    result = run_import("constitutions", CONSTITUTIONS, out)
    assert result.exit_code == 0, result.output
    assert "warning: system_chat[2] skipped" in result.stderr
    assert "warning" not in result.stdout
    assert len(constitution.load(out).principles[0].examples) == 2


# --------------------------------------------------------------------------- comparisons


def test_comparisons_are_paired_by_position_and_repeated_when_shorter() -> None:
    c, _ = import_file("critique-revision", CRITIQUE_REVISION, comparisons=COMPARISONS)
    questions = [q.strip() for q in raw(COMPARISONS)]
    assert len(c.principles) > len(questions)
    assert [p.comparison_question for p in c.principles] == [
        questions[i % len(questions)] for i in range(len(c.principles))
    ]


def test_comparisons_pair_with_the_constitutions_format() -> None:
    c, _ = import_file("constitutions", CONSTITUTIONS, comparisons=COMPARISONS)
    assert [p.comparison_question for p in c.principles] == [q.strip() for q in raw(COMPARISONS)]


def test_cli_comparisons_option(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    result = run_import("critique-revision", CRITIQUE_REVISION, out, "--comparisons", COMPARISONS)
    assert result.exit_code == 0, result.output
    questions = [q.strip() for q in raw(COMPARISONS)]
    loaded = constitution.load(out)
    assert [p.comparison_question for p in loaded.principles] == [
        questions[i % len(questions)] for i in range(len(loaded.principles))
    ]
    assert invoke("principles", "validate", out).exit_code == 0


def test_standalone_comparisons_build_one_principle_per_instruction() -> None:
    c, warnings = import_file("comparisons", COMPARISONS)
    instructions = [q.strip() for q in raw(COMPARISONS)]
    assert warnings == []
    assert [p.id for p in c.principles] == [f"comparison-{i:02d}" for i in range(1, len(instructions) + 1)]
    for p, text in zip(c.principles, instructions, strict=True):
        assert p.comparison_question == text
        assert p.critique_request.endswith(text)
        assert p.revision_request.endswith(text)
        assert p.critique_request != p.revision_request


def test_standalone_comparisons_with_explicit_comparisons_use_those(tmp_path: Path) -> None:
    other = write_json(tmp_path, ["Choose the response that is shorter."], "other.json")
    c, _ = import_file("comparisons", COMPARISONS, comparisons=other)
    assert {p.comparison_question for p in c.principles} == {"Choose the response that is shorter."}


@pytest.mark.parametrize("fmt", ["critique-revision", "constitutions"])
def test_default_comparison_without_comparisons(fmt: str) -> None:
    c, _ = import_file(fmt, SAMPLES[fmt])
    assert {p.comparison_question for p in c.principles} == {DEFAULT_COMPARISON}


# --------------------------------------------------------------------------- errors


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.json"
    source.write_text('{\n  "a": {"prompt": ["x"],\n        "edit_request" "y"}\n}\n', encoding="utf-8")
    with pytest.raises(ConstitutionError) as info:
        import_file("critique-revision", source)
    (problem,) = info.value.problems
    assert problem.line == 3
    assert "invalid JSON" in problem.message
    out = tmp_path / "out.yaml"
    result = run_import("critique-revision", source, out)
    assert_clean_failure(result, (1,))
    assert f"{source}:3: invalid JSON" in result.stderr
    assert not out.exists()


def test_invalid_json_in_the_comparisons_file_names_the_line(tmp_path: Path) -> None:
    comps = tmp_path / "comps.json"
    comps.write_text('[\n  "Choose the response that is kind.",\n]\n', encoding="utf-8")
    result = run_import("critique-revision", CRITIQUE_REVISION, tmp_path / "out.yaml", "--comparisons", comps)
    assert_clean_failure(result, (1,))
    assert f"{comps}:3: invalid JSON" in result.stderr


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    source = tmp_path / "latin1.json"
    source.write_bytes('["Choose the response that is caf\xe9-friendly."]'.encode("latin-1"))
    result = run_import("comparisons", source, tmp_path / "out.yaml")
    assert_clean_failure(result, (1,))
    assert "not valid UTF-8" in result.stderr


WRONG_STRUCTURE = [
    ("critique-revision", [{"prompt": ["x"], "edit_request": "y"}], "expected a JSON object"),
    ("critique-revision", "just text", "expected a JSON object"),
    ("critique-revision", {"a": {"prompt": ["x"]}}, "entry 'a'"),
    ("critique-revision", {"a": "Identify things."}, "entry 'a'"),
    ("critique-revision", {"a": {"prompt": [1], "edit_request": "y"}}, "must be text"),
    ("critique-revision", {"a": {"prompt": ["x"], "edit_request": ["y"]}}, "must be text"),
    ("constitutions", {"principles": [{"critic": "x", "revision": "y"}]}, '"constitutions" list'),
    ("constitutions", [{"critic": "x", "revision": "y"}], '"constitutions" list'),
    ("constitutions", {"constitutions": {"critic": "x", "revision": "y"}}, '"constitutions" list'),
    ("constitutions", {"constitutions": [{"critic": "x"}]}, "constitutions[0]"),
    ("constitutions", {"constitutions": [{"critic": "x", "revision": "y"}, "z"]}, "constitutions[1]"),
    ("comparisons", {"a": "Choose the response that is kind."}, "non-empty JSON list"),
    ("comparisons", ["Choose the response that is kind.", 3], "non-empty JSON list"),
    ("comparisons", ["Choose the response that is kind.", "   "], "non-empty JSON list"),
]

EMPTY = [
    ("critique-revision", {}, "no principles found"),
    ("critique-revision", {"a": {"prompt": [], "edit_request": "y"}}, "no principles found"),
    ("constitutions", {"constitutions": []}, "no principles found"),
    ("comparisons", [], "non-empty JSON list"),
]


@pytest.mark.parametrize(("fmt", "data", "message"), WRONG_STRUCTURE + EMPTY)
def test_wrong_structure_is_a_readable_error(fmt: str, data: Any, message: str, tmp_path: Path) -> None:
    source = write_json(tmp_path, data)
    with pytest.raises(ConstitutionError, match=re.escape(message)):
        import_file(fmt, source)
    out = tmp_path / "out.yaml"
    result = run_import(fmt, source, out)
    assert_clean_failure(result, (1,))
    assert f"{source}: " in result.stderr
    assert message in result.stderr
    assert not out.exists()


def test_empty_comparisons_file_is_an_error(tmp_path: Path) -> None:
    comps = write_json(tmp_path, [], "comps.json")
    result = run_import("critique-revision", CRITIQUE_REVISION, tmp_path / "out.yaml", "--comparisons", comps)
    assert_clean_failure(result, (1,))
    assert "non-empty JSON list" in result.stderr


def test_empty_text_fails_validation_readably(tmp_path: Path) -> None:
    source = write_json(tmp_path, {"a": {"prompt": ["   "], "edit_request": "Fix it."}})
    result = run_import("critique-revision", source, tmp_path / "out.yaml")
    assert_clean_failure(result, (1,))
    assert "principles[0].critique_request: must not be empty (imported principle 'a')" in result.stderr


def test_keys_that_slug_to_the_same_id_are_reported_by_id(tmp_path: Path) -> None:
    """Regression: the message once read a literal "duplicate principle id {id!r}"."""
    data = {"Be Kind": {"prompt": "a", "edit_request": "b"}, "be-kind": {"prompt": "c", "edit_request": "d"}}
    source = write_json(tmp_path, data)
    result = run_import("critique-revision", source, tmp_path / "out.yaml")
    assert_clean_failure(result, (1,))
    assert "duplicate principle id 'be-kind'" in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    with pytest.raises(ConstitutionError, match="file not found"):
        import_file("critique-revision", missing)
    result = run_import("critique-revision", missing, tmp_path / "out.yaml")
    assert_clean_failure(result)
    assert "does not exist" in result.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_missing_comparisons_file(tmp_path: Path) -> None:
    result = run_import("critique-revision", CRITIQUE_REVISION, tmp_path / "out.yaml", "--comparisons", tmp_path / "x")
    assert_clean_failure(result)
    assert "does not exist" in result.stderr


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConstitutionError, match="unknown format 'yaml'"):
        import_file("yaml", CRITIQUE_REVISION)
    result = run_import("yaml", CRITIQUE_REVISION, tmp_path / "out.yaml")
    assert_clean_failure(result, (2,))
    assert "critique-revision" in result.stderr


def test_invalid_id_option_is_a_readable_error(tmp_path: Path) -> None:
    result = run_import("comparisons", COMPARISONS, tmp_path / "out.yaml", "--id", "Not A Slug")
    assert_clean_failure(result, (1,))
    assert "is not a valid id" in result.stderr


def test_output_in_a_missing_folder_is_not_a_traceback(tmp_path: Path) -> None:
    """Regression: writing into a missing folder once ended in a FileNotFoundError traceback."""
    out = tmp_path / "no" / "such" / "dir" / "out.yaml"
    result = run_import("comparisons", COMPARISONS, out)
    if result.exit_code == 0:  # creating the folder would be acceptable too
        assert constitution.load(out).principles
    else:
        assert_clean_failure(result, (1, 2))
        assert str(out) in result.stderr


# --------------------------------------------------------------------------- overwriting, metadata


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    out.write_text("# keep me\n", encoding="utf-8")
    result = run_import("comparisons", COMPARISONS, out)
    assert_clean_failure(result, (1,))
    assert "exists already" in result.stderr
    assert "--force" in result.stderr
    assert out.read_text(encoding="utf-8") == "# keep me\n"


def test_force_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    out.write_text("# keep me\n", encoding="utf-8")
    result = run_import("comparisons", COMPARISONS, out, "--force")
    assert result.exit_code == 0, result.output
    assert "keep me" not in out.read_text(encoding="utf-8")
    assert len(constitution.load(out).principles) == len(raw(COMPARISONS))


def test_id_and_name_options_set_metadata(tmp_path: Path) -> None:
    c, _ = import_file("critique-revision", CRITIQUE_REVISION, constitution_id="paper-rules", name="Paper rules")
    assert (c.id, c.name) == ("paper-rules", "Paper rules")
    out = tmp_path / "out.yaml"
    result = run_import("critique-revision", CRITIQUE_REVISION, out, "--id", "paper-rules", "--name", "Paper rules")
    assert result.exit_code == 0, result.output
    loaded = constitution.load(out)
    assert (loaded.id, loaded.name) == ("paper-rules", "Paper rules")
    assert loaded.content_hash == c.content_hash


def test_file_name_without_letters_gives_a_fallback_id(tmp_path: Path) -> None:
    source = write_json(tmp_path, ["Choose the response that is kind."], "___.json")
    c, _ = import_file("comparisons", source)
    assert c.id == "imported"


def test_generated_titles_are_one_line(tmp_path: Path) -> None:
    """A first sentence that wraps over lines (or holds a zero-width space) still makes a valid title."""
    source = write_json(
        tmp_path, {"a": {"prompt": ["Point out\nwhat is\u200b wrong here. More text."], "edit_request": "Fix."}}
    )
    c, _ = import_file("critique-revision", source)
    assert c.principles[0].title == "Point out what is wrong here."
    assert c.principles[0].critique_request.startswith("Point out\nwhat is\u200b wrong")  # texts are kept as they are


def test_a_bidi_control_in_an_imported_text_names_the_principle(tmp_path: Path) -> None:
    source = write_json(tmp_path, {"a": {"prompt": ["Point out problems."], "edit_request": "Fix \u202eit."}})
    result = run_import("critique-revision", source, tmp_path / "out.yaml")
    assert_clean_failure(result, (1,))
    assert (
        f"{source}: principles[0].revision_request: contains U+202E RIGHT-TO-LEFT OVERRIDE (character 5)"
        in result.stderr
    )
    assert "(imported principle 'a')" in result.stderr
