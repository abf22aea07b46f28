"""The command line's options against the settings they fill: one name, one default, one spelling.

Options that mirror a field of a settings model (the run configs behind
``cai generate --config`` and ``cai eval --config``, the judge's
:class:`JudgeSettings`, ``cai train``'s :class:`TrainOptions`) declare a literal
default, because only click is imported when ``cai`` starts. These tests hold
each such option to its field: same name, same default. A field added to a
settings model without a flag fails here until it gets one or is listed as
config-only, with the reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from engine.cli import cli
from engine.cli.options import Option
from engine.cli.train import TRL_FLAGS
from engine.config import JUDGE_FIELDS, EvalConfig, GenerateConfig
from engine.generate import label as run_label
from engine.records import JudgeSettings
from engine.train import TrainOptions


def command(*path: str) -> click.Command:
    found: click.Command = cli
    for name in path:
        assert isinstance(found, click.Group), path
        found = found.commands[name]
    return found


def all_commands(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def defaults(cmd: click.Command) -> dict[str, Any]:
    """What the command's function receives for each parameter when no flag is given."""
    ctx = cmd.make_context(cmd.name or "", [], resilient_parsing=True)
    return dict(ctx.params)


def option_names(cmd: click.Command) -> set[str]:
    return {p.name for p in cmd.params if isinstance(p, click.Option) and p.name}


def field_default(model: type[BaseModel], field: str) -> Any:
    info = model.model_fields[field]
    return PydanticUndefined if info.is_required() else info.get_default(call_default_factory=True)


def same_default(flag: Any, field: Any) -> bool:
    if field is PydanticUndefined:  # a required field: the flag has no default, the model says it is missing
        return flag is None
    if flag == () and field is None:  # a flag given any number of times, not given: the field's "not set"
        return True
    if isinstance(flag, tuple) and isinstance(field, list | tuple | dict):
        return list(flag) == list(field) if not isinstance(field, dict) else (flag == () and field == {})
    return bool(flag == field and type(flag) is type(field))


def assert_mirrors(
    cmd: click.Command,
    model: type[BaseModel],
    fields: dict[str, str],
    *,
    config_only: dict[str, str],
) -> None:
    """Each option in ``fields`` (parameter -> field) has its field's default; every field has a flag or a reason."""
    values = defaults(cmd)
    for param, field in fields.items():
        assert param in values, f"{cmd.name}: no option for {model.__name__}.{field}"
        assert same_default(values[param], field_default(model, field)), (
            f"{cmd.name} --{param.replace('_', '-')}: default {values[param]!r}, "
            f"but {model.__name__}.{field} defaults to {field_default(model, field)!r}"
        )
    unflagged = set(model.model_fields) - set(fields.values()) - set(config_only)
    assert not unflagged, f"{model.__name__} fields with no flag on `cai {cmd.name}` (add one, or say why): {unflagged}"
    assert not set(config_only) - set(model.model_fields), "config-only entries that are no longer fields"


# ------------------------------------------------------------------ the run configs


def test_generate_flags_are_the_run_config_with_its_defaults() -> None:
    cmd = command("generate")
    flags = option_names(cmd) - {"config_file"}
    assert flags == set(GenerateConfig.model_fields), "a flag of `cai generate` with no run-config key, or vice versa"
    assert_mirrors(cmd, GenerateConfig, {name: name for name in flags}, config_only={})


def test_eval_flags_are_the_eval_config_with_its_defaults() -> None:
    cmd = command("eval")
    flags = option_names(cmd) - {"config_file", "compare"}  # --compare reads two reports instead of running
    assert_mirrors(
        cmd,
        EvalConfig,
        {name: name for name in flags},
        config_only={"model": "the file's other way to write models: (one name or a list); --model fills models"},
    )


# ------------------------------------------------------------------ the judge's settings

JUDGE_FLAG = {judge: flag for flag, judge in JUDGE_FIELDS.items()}
"""JudgeSettings field -> its flag's parameter, as the run config names it (`judge_cot`, `min_margin`, ...)."""


def judge_flag(field: str) -> str:
    """The one name of the option for a JudgeSettings field, on every command that has it."""
    return JUDGE_FLAG.get(field, f"judge_{field}")


@pytest.mark.parametrize(
    ("path", "config_only"),
    [
        (
            ("label",),
            {
                "cot_reader": "the run config holds no such key: generate and label score the chain of thought",
                "cot_max_new_tokens": "the run config holds no such key: generate and label use the judge's default",
                "cot_temperature": "greedy chain of thought everywhere; no command sets it",
            },
        ),
        (
            ("judge-eval",),
            {
                "pairing": "judge-eval is given its pairs; there are no candidates to choose between",
                "cot_temperature": "greedy chain of thought everywhere; no command sets it",
                "aggregate": "judge-eval scores each judge alone and reports both aggregates (mean and majority)",
            },
        ),
    ],
)
def test_judge_flags_are_the_judge_settings_with_their_defaults(
    path: tuple[str, ...], config_only: dict[str, str]
) -> None:
    cmd = command(*path)
    fields = {judge_flag(f): f for f in JudgeSettings.model_fields if f not in config_only}
    assert_mirrors(cmd, JudgeSettings, fields, config_only=config_only)


def test_the_run_config_names_the_judge_settings_as_the_flags_do() -> None:
    for field, judge in JUDGE_FIELDS.items():
        assert field in GenerateConfig.model_fields and judge_flag(judge) == field


def test_label_passes_its_other_flags_with_the_defaults_of_the_labelling_function() -> None:
    values = defaults(command("label"))
    signature = inspect.signature(run_label).parameters
    for name in ("judge_model", "constitution", "batch_size", "chunk_size", "dtype", "device", "force"):
        assert values[name] == signature[name].default, name


# ------------------------------------------------------------------ cai train

TRAIN_CONFIG_ONLY = {
    "kind": "the subcommand: sft, dpo or grpo",
    "overrides": "filled from --set and the flags of TRL config fields (TRL_FLAGS)",
    "flags": "filled with the flag that set each override, for messages",
    "lora_overrides": "filled from --lora-r and --lora-alpha",
    "judge_batch_size": "no flag yet: the GRPO judge batches 16 requests",
}
TRAIN_TO_TRL = {"sets", "lora_r", "lora_alpha", "num_generations", "max_completion_length", *TRL_FLAGS}
"""Options of `cai train` that set TRL's (or peft's) config, not a TrainOptions field."""


def test_train_flags_are_the_train_options_with_their_defaults() -> None:
    covered: set[str] = set()
    for kind in ("sft", "dpo", "grpo", "rloo", "rm"):
        cmd = command("train", kind)
        fields = option_names(cmd) - TRAIN_TO_TRL
        assert fields <= set(TrainOptions.model_fields), f"train {kind}: {fields - set(TrainOptions.model_fields)}"
        values = defaults(cmd)
        if kind == "rm":  # --data repeats there: the command hands its values over as `sources`
            assert values.pop("data") in (None, ())
            fields = (fields - {"data"}) | {"sources"}
            values["sources"] = []
        for name in fields:
            assert same_default(values[name], field_default(TrainOptions, name)), f"train {kind} --{name}"
        covered |= fields
    unflagged = set(TrainOptions.model_fields) - covered - set(TRAIN_CONFIG_ONLY)
    assert not unflagged, f"TrainOptions fields with no flag on any `cai train` command: {unflagged}"
    kinds = ("sft", "dpo", "grpo", "rloo", "rm")
    assert set(TRL_FLAGS) <= set().union(*(option_names(command("train", k)) for k in kinds))


# ------------------------------------------------------------------ one spelling


def visible_spellings(param: click.Option) -> set[str]:
    old = param.old if isinstance(param, Option) else ()
    return {name for name in (*param.opts, *param.secondary_opts) if name not in old}


def test_a_parameter_is_spelled_the_same_on_every_command() -> None:
    spellings: dict[str, dict[frozenset[str], list[str]]] = {}
    for path, cmd in all_commands():
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name:
                spellings.setdefault(param.name, {}).setdefault(frozenset(visible_spellings(param)), []).append(
                    " ".join(path)
                )
    differing = {name: ways for name, ways in spellings.items() if len(ways) > 1}
    assert not differing, f"one parameter, several spellings: {differing}"


SAME_FLAG_OTHER_NAME = {
    "--model": {"models"},  # cai eval: repeatable, one per model evaluated
    "--config": {"recipe"},  # cai train: a recipe (shipped name or YAML of TRL fields), not a run config
    "--reward-model": {"reward_models"},  # cai train grpo/rloo: repeatable, weighted reward sources
}


def test_a_flag_means_one_parameter_on_every_command() -> None:
    names: dict[str, set[str]] = {}
    for _, cmd in all_commands():
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name:
                for spelling in visible_spellings(param):
                    if spelling.startswith("--"):
                        names.setdefault(spelling, set()).add(param.name)
    for spelling, found in names.items():
        assert len(found - SAME_FLAG_OTHER_NAME.get(spelling, set())) <= 1, (spelling, found)


OLD_SPELLINGS = [
    (("judge-eval",), ["--cot"], ["--judge-cot"]),
    (("judge-eval",), ["--band", "0.3", "0.7"], ["--judge-band", "0.3", "0.7"]),
    (("judge-eval",), ["--cot-reader", "parse"], ["--judge-cot-reader", "parse"]),
    (("judge-eval",), ["--cot-max-new-tokens", "20"], ["--judge-cot-max-new-tokens", "20"]),
    (("judge-eval",), ["--model", "scripted"], ["--judge-model", "scripted"]),
    (("export",), ["RUN", "--output", "x"], ["RUN", "--out", "x"]),
    (("principles", "schema"), ["--output", "x.json"], ["--out", "x.json"]),
]


@pytest.mark.parametrize(("path", "old", "new"), OLD_SPELLINGS)
def test_old_spellings_still_work_and_help_shows_the_new_one(
    path: tuple[str, ...], old: list[str], new: list[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RUN").mkdir()
    cmd = command(*path)
    assert cmd.make_context(cmd.name or "", list(old)).params == cmd.make_context(cmd.name or "", list(new)).params
    shown = CliRunner().invoke(cli, [*path, "--help"]).output
    flag = next(a for a in old if a.startswith("--"))
    assert f"{next(a for a in new if a.startswith('--'))} " in shown
    assert f"{flag} " not in shown and f"{flag}," not in shown


def test_a_bad_value_under_an_old_spelling_is_named_by_the_new_one() -> None:
    result = CliRunner().invoke(cli, ["judge-eval", "--cot-max-new-tokens", "0"])
    assert result.exit_code == 2
    assert "'--judge-cot-max-new-tokens'" in result.output and "'--cot-max-new-tokens'" not in result.output
