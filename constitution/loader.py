"""Loading, validating and composing constitution files.

``load("default")`` or ``load("path/to/file.yaml")`` returns a composed
:class:`~constitution.schema.Constitution`: includes are resolved, selections
applied, file-wide examples handed down to the principles that have none, so
the result needs no further resolution and its ``content_hash`` identifies it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from constitution.errors import ConstitutionError, Problem, did_you_mean, field_path
from constitution.schema import SCHEMA_VERSION, Constitution, Include, Principle, Templates
from constitution.yamlfile import Loc, read_yaml

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "principles"
YAML_SUFFIXES = (".yaml", ".yml")


def builtin_names() -> list[str]:
    """Names of the constitutions shipped in ``principles/``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_source(source: str | Path) -> Path:
    """Turn a path, or the name of a builtin constitution, into a file path.

    Raises:
        ConstitutionError: Neither an existing path nor a builtin name.
    """
    path = Path(source)
    if path.suffix in YAML_SUFFIXES or exists(path) or len(path.parts) > 1:
        return path
    return builtin_path(str(source))


def exists(path: Path) -> bool:
    """``path.exists()``, but False where the OS refuses to look (a name too long, say)."""
    try:
        return path.exists()
    except OSError:
        return False


def builtin_path(name: str) -> Path:
    """The file of a builtin constitution.

    Raises:
        ConstitutionError: No builtin has this name (with a "did you mean").
    """
    path = BUILTIN_DIR / f"{name}.yaml"
    if path.exists():
        return path
    names = builtin_names()
    raise ConstitutionError(
        [
            Problem(
                name,
                f"no such file, nor a builtin constitution{did_you_mean(name, names)} (builtins: {', '.join(names)})",
            )
        ]
    )


def load(source: str | Path) -> Constitution:
    """Load, validate and compose a constitution.

    Args:
        source: A builtin name (``"default"``, ``"harmlessness"``...) or the
            path of a YAML file.

    Returns:
        The composed constitution (no includes left), with its content hash.

    Raises:
        ConstitutionError: Every problem found, each with file, line and field.
    """
    return _load(resolve_source(source), ())


def dump(constitution: Constitution) -> str:
    """Write a constitution as YAML that loads back to the same content hash."""
    data = constitution.model_dump(mode="json", exclude_defaults=True)
    data = {"schema_version": SCHEMA_VERSION, **data}
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as ``|`` blocks where YAML allows it."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # YAML reads a raw NEL, LS or PS as a line break: only double quotes escape them
    if any(c in value for c in "\x85\u2028\u2029"):
        style: str | None = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def iter_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Expand folders into the YAML files under them (sorted); keep files as given."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file())
        else:
            yield p


def _load(path: Path, stack: tuple[Path, ...]) -> Constitution:
    name = _display(path)
    data, lines = read_yaml(path, name)
    if not isinstance(data, dict):
        raise ConstitutionError(
            [Problem(name, f"the file must be a mapping (id:, name:, principles: ...), not a {_kind(data)}", 1)]
        )
    try:
        parsed = Constitution.model_validate(data)
    except ValidationError as exc:
        found = sorted((_problem(name, err, lines) for err in exc.errors()), key=lambda p: p.line or 0)
        raise ConstitutionError(found) from None

    problems: list[Problem] = []
    principles: list[Principle] = []
    sources: dict[str, str] = {}
    templates: dict[str, str] = {}
    me = path.resolve()
    for i, entry in enumerate(parsed.include):
        where = Problem(name, "", lines.get(("include", i)), f"include[{i}]")
        try:
            target = _include_path(entry, path)
        except ConstitutionError as exc:
            problems.append(_at(where, exc.problems[0].message))
            continue
        if target.resolve() in (*stack, me):
            chain = " -> ".join(_display(p) for p in (*stack, me, target.resolve()))
            problems.append(_at(where, f"include cycle: {chain}"))
            continue
        if not exists(target):
            problems.append(_at(where, f"included file not found: {_display(target)}"))
            continue
        try:
            included = _load(target, (*stack, me))
        except ConstitutionError as exc:
            problems.append(_at(where, f"included file {_display(target)} is invalid (see below)"))
            problems.extend(exc.problems)
            continue
        picked, unknown = _select(included, entry)
        for kind, value in unknown:
            ids = [p.id for p in included.principles]
            problems.append(_at(where, f"{kind}: no principle {value!r} in {included.id}{did_you_mean(value, ids)}"))
        for p in picked:
            if p.id in sources:
                problems.append(
                    _at(where, f"principle id {p.id!r} comes from both {sources[p.id]} and {included.source_of(p.id)}")
                )
                continue
            sources[p.id] = included.source_of(p.id) or _display(target)
            principles.append(p)
        if included.templates:
            for key, value in included.templates.model_dump(exclude_none=True).items():
                templates.setdefault(key, value)

    for i, p in enumerate(parsed.hand_down_examples().principles):
        if p.id in sources:
            problems.append(
                Problem(
                    name,
                    f"principle id {p.id!r} is also defined in {sources[p.id]}",
                    lines.get(("principles", i, "id")),
                    f"principles[{i}].id",
                )
            )
            continue
        sources[p.id] = name
        principles.append(p)
    if problems:
        raise ConstitutionError(problems)

    if parsed.templates:
        templates.update(parsed.templates.model_dump(exclude_none=True))
    composed = parsed.model_copy(
        update={
            "include": [],
            "examples": [],
            "principles": principles,
            "templates": Templates(**templates) if templates else None,
        }
    )
    if not composed.principles:
        raise ConstitutionError([Problem(name, "the composed constitution has no principles left", 1)])
    composed._sources = sources
    return composed


def _include_path(entry: Include, including: Path) -> Path:
    if Path(entry.path).suffix in YAML_SUFFIXES:
        return including.parent / entry.path
    return builtin_path(entry.path)


def _select(included: Constitution, entry: Include) -> tuple[list[Principle], list[tuple[str, str]]]:
    ids = {p.id for p in included.principles}
    unknown = [
        (f"{kind}.ids", i)
        for kind, sel in (("select", entry.select), ("exclude", entry.exclude))
        if sel
        for i in sel.ids
        if i not in ids
    ]
    picked = [
        p
        for p in included.principles
        if (entry.select is None or entry.select.matches(p)) and not (entry.exclude and entry.exclude.matches(p))
    ]
    return picked, unknown


def _at(where: Problem, message: str) -> Problem:
    return Problem(where.file, message, where.line, where.field)


def _display(path: Path) -> str:
    """A path as users typed it when relative to the working folder, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve()) if ".." in path.parts else str(path)


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "text", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _problem(name: str, err: ErrorDetails, lines: dict[Loc, int]) -> Problem:
    """Turn one pydantic error into a readable problem with a line number."""
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    message = err["msg"].removeprefix("Value error, ")
    if kind == "duplicate_id":
        loc = (*loc, err["ctx"]["index"], "id")
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown field {key!r}{did_you_mean(key, _fields_at(loc[:-1]))}"
    elif kind == "string_type" and isinstance(err["input"], int | float | bool):
        message = f"expected text but got the {_kind(err['input'])} {err['input']!r}; put it in quotes"
    elif kind == "literal_error" and loc == ("schema_version",):
        message = (
            f"unsupported schema_version {err['input']!r}; this version of cai reads schema_version {SCHEMA_VERSION}"
        )
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        message = f"expected a mapping (key: value lines), got a {_kind(err['input'])}"
    elif kind == "list_type":
        message = f"expected a list (lines starting with '-'), got a {_kind(err['input'])}"
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    return Problem(name, message, line, field_path(loc))


def _fields_at(loc: Loc) -> list[str]:
    """Field names of the model found at a location in a constitution file."""
    model: Any = Constitution
    for part in loc:
        if isinstance(part, str):
            model = _unwrap(model.model_fields[part].annotation) if part in model.model_fields else None
        elif get_origin(model) is list:
            model = _unwrap(get_args(model)[0])
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to a model or a list type."""
    for arg in (annotation, *get_args(annotation)):
        if get_origin(arg) is list or (isinstance(arg, type) and issubclass(arg, BaseModel)):
            return arg
    return None
