"""The committed JSON Schema, the shipped files, the pre-commit hook and the CLI's import hygiene."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

import constitution
from constitution.taxonomy import HARM_TAGS
from engine.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PRINCIPLES = ROOT / "principles"


def test_committed_schema_is_current() -> None:
    committed = json.loads((PRINCIPLES / "constitution.schema.json").read_text())
    fix = "cai principles schema -o principles/constitution.schema.json"
    assert committed == constitution.json_schema(), f"the committed schema is stale: run `{fix}`"


def test_schema_command_prints_the_schema() -> None:
    result = CliRunner().invoke(cli, ["principles", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == constitution.json_schema()


@pytest.mark.parametrize("name", ["default", "harmlessness", "helpfulness"])
def test_shipped_files_validate_with_cli_and_json_schema(name: str) -> None:
    result = CliRunner().invoke(cli, ["principles", "validate", str(PRINCIPLES / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    schema = json.loads((PRINCIPLES / "constitution.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((PRINCIPLES / f"{name}.yaml").read_text()), schema)


def test_shipped_constitutions_cover_the_issue_requirements() -> None:
    harm = constitution.load("harmlessness")
    assert len(harm.principles) >= 16
    assert set(HARM_TAGS) <= {t for p in harm.principles for t in p.tags}, "every harm tag needs a principle"
    assert any(not e.needs_change for p in harm.principles for e in p.examples), "needs a nothing-to-change example"
    helpful = constitution.load("helpfulness")
    assert {t for p in helpful.principles for t in p.tags} <= {"helpfulness", "honesty", "general"}
    default = constitution.load("default")
    assert {p.id for p in default.principles} == {p.id for p in harm.principles} | {p.id for p in helpful.principles}


def test_json_schema_rejects_what_the_validator_rejects() -> None:
    schema = json.loads((PRINCIPLES / "constitution.schema.json").read_text())
    doc = yaml.safe_load((PRINCIPLES / "helpfulness.yaml").read_text())
    doc["principles"][0]["tags"] = ["not-a-tag"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_pre_commit_hook_runs_the_validator() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "cai-validate-principles"
    program, *args = shlex.split(hook["entry"])
    assert program == "cai"
    result = CliRunner().invoke(cli, [*args, str(PRINCIPLES / "default.yaml")])
    assert result.exit_code == 0, result.output


def test_principles_commands_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "sys.argv = ['cai', 'principles', 'show', 'default', '--render']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "HEAVY []" in run.stderr


def test_help_teaches() -> None:
    result = CliRunner().invoke(cli, ["principles", "--help"])
    assert result.exit_code == 0
    for command in ("validate", "show", "schema", "import", "tags"):
        assert command in result.stdout
    validate_help = CliRunner().invoke(cli, ["principles", "validate", "--help"]).stdout
    assert "Examples:" in validate_help and "FILE:LINE" in validate_help


def test_code_is_lint_clean_and_typed() -> None:
    for command in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ):
        run = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout}\n{run.stderr}"


def test_every_python_package_is_listed_for_the_wheel() -> None:
    """A subpackage missing from pyproject's ``packages`` is silently left out of a normal (non-editable) install."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for top in ("constitution", "engine", "principles")
        for init in (root / top).rglob("__init__.py")
    }
    assert found == listed
