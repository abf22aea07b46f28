"""The fields of a TRL config class: their names, their simple types, and where a set value came from.

Nothing is copied from TRL: the keys of a recipe or of ``--set`` are checked
against the config class installed, so a recipe always matches the TRL
release in use, and a typo is an error that names the key and the closest
field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from constitution.errors import did_you_mean
from engine.train.errors import TrainError

if TYPE_CHECKING:
    from engine.train.recipes import Recipe

RENAMED = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}
"""transformers 5 renamed gradient checkpointing; the old names still work but warn on every run."""


def config_fields(config_class: type) -> dict[str, dataclasses.Field[Any]]:
    """The settable fields of a TRL config dataclass."""
    return {f.name: f for f in dataclasses.fields(config_class) if f.init}


def _plain_type(annotation: object) -> type | None:
    """``float`` for ``float`` or ``float | None``; None for anything richer."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _plain_type(args[0]) if len(args) == 1 else None
    return annotation if annotation in (bool, int, float, str) else None


def coerce(name: str, value: Any, annotation: object, where: str) -> Any:
    """Check a value against a simple field type, converting what YAML reads loosely.

    YAML 1.1 reads ``1e-5`` as a string, so numeric strings become floats.

    Raises:
        TrainError: The value cannot be of the field's type.
    """
    kind = _plain_type(annotation)
    options = typing.get_args(annotation) or (annotation,)
    if isinstance(value, bool) and bool not in options and str in options:
        return "no" if not value else "yes"  # YAML 1.1 reads `save_strategy: no` as False
    if value is None or kind is None or kind is str:
        return value
    bad = TrainError(f"{where}: {name}: expected {kind.__name__}, got {value!r}")
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    if kind is float:
        if isinstance(value, int | float):
            return value  # an int stays an int: fields such as warmup_steps read 5 and 0.1 differently
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(value, str):  # YAML 1.1 reads 1e12 as a string, too
        try:
            value = float(value) if not value.strip().lstrip("-").isdigit() else int(value)
        except ValueError:
            raise bad from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise bad
    return value


def check_fields(values: dict[str, Any], config_class: type, where: str, other: type | None = None) -> dict[str, Any]:
    """Validate keys (unknown ones are errors with a suggestion) and simple value types.

    Args:
        values: Field name to value.
        config_class: The TRL config class the keys must belong to.
        where: Named in messages (the recipe file, or ``command line``).
        other: The other trainer's config class, to say when a key belongs there.

    Raises:
        TrainError: One line per unknown key or bad value.
    """
    known = config_fields(config_class)
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            hint = did_you_mean(name, known)
            if not hint and other is not None and name in config_fields(other):
                hint = f"; it is a {other.__name__} field: is this recipe meant for another `cai train` command?"
            problems.append(f"{where}: unknown {config_class.__name__} field {name!r}{hint}")
            continue
        try:
            out[name] = coerce(name, value, known[name].type, where)
        except TrainError as exc:
            problems.append(str(exc))
    if problems:
        raise TrainError("\n".join(problems))
    return out


@dataclass
class Origins:
    """Where each explicitly set TRL field came from: the recipe file, a flag, or ``--set``."""

    recipe: str
    from_recipe: set[str]
    from_command_line: set[str]
    flags: dict[str, str]
    """Field name to the CLI flag that set it (``per_device_train_batch_size`` to ``--batch-size``)."""

    @classmethod
    def of(
        cls, recipe: Recipe, overrides: dict[str, Any], flags: dict[str, str] | None, known: Collection[str]
    ) -> Origins:
        """The origins of a recipe's and the command line's fields, under the names the config class uses."""

        def name(key: str) -> str:
            key = key.replace("-", "_")
            return RENAMED[key] if key in RENAMED and RENAMED[key] in known else key

        return cls(
            recipe.source,
            {name(k) for k in recipe.fields},
            {name(k) for k in overrides},
            {name(k): flag for k, flag in (flags or {}).items()},
        )

    @property
    def explicit(self) -> list[str]:
        """The fields a person set, recipe first."""
        return sorted(self.from_recipe - self.from_command_line) + sorted(self.from_command_line)

    def where(self, key: str) -> str:
        """Where ``key`` was set: the recipe file, the flag, ``command line`` (``--set``), or ``default``."""
        if key in self.from_command_line:
            return self.flags.get(key, "command line")
        if key in self.from_recipe:
            return self.recipe
        return "default"

    def fix(self, key: str) -> str:
        """What to change to fix ``key``."""
        if key in self.from_command_line:
            flag = self.flags.get(key)
            return f"give {flag} another value" if flag else f"change --set {key}=... on the command line"
        if key in self.from_recipe:
            return f"change {key} in {self.recipe} (or override it: --set {key}=...)"
        return f"set {key} in the recipe or with --set {key}=..."


__all__ = ["RENAMED", "Origins", "check_fields", "coerce", "config_fields"]
