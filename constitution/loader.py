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
from constitution.yamlfile import Loc, read_yaml, suffix_hint

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


def builtin_path(name: str, folder: Path | None = None) -> Path:
    """The file of a builtin constitution.

    Args:
        name: The builtin's name.
        folder: Where a file of this name would be (for a hint when ``NAME.yaml`` is there).

    Raises:
        ConstitutionError: No builtin has this name (with a "did you mean", or the file meant).
    """
    path = BUILTIN_DIR / f"{name}.yaml"
    if "/" not in name and "\\" not in name and exists(path):
        return path
    names = builtin_names()
    hint = suffix_hint((folder or Path()) / name, name)
    if hint:
        message = f"no builtin constitution {name!r}{hint}"
    elif len(Path(name).parts) > 1:
        message = f"no such file: a path needs its .yaml or .yml suffix (builtins: {', '.join(names)})"
    else:
        message = f"no such file, nor a builtin constitution{did_you_mean(name, names)} (builtins: {', '.join(names)})"
    raise ConstitutionError([Problem(name, message)])


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
    composed = _load(resolve_source(source), ())
    if composed.templates:
        _check_templates(composed)
    return composed


def _check_templates(composed: Constitution) -> None:
    """Render each custom template for every principle it will be used with."""
    from constitution.template_checks import check_for_principles  # jinja2 costs ~40 ms: only when needed

    templates = composed.templates.model_dump(exclude_none=True) if composed.templates else {}
    problems = []
    for kind, message in check_for_principles(templates, composed.principles):
        file, line = composed.template_source(kind) or (composed.id, None)
        problems.append(Problem(file, message, line, f"templates.{kind}"))
    if problems:
        raise ConstitutionError(problems)


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
            [Problem(name, f"the file must be a mapping (id:, name:, principles: ...), not {_kind(data)}", 1)]
        )
    try:
        parsed = Constitution.model_validate(data)
    except ValidationError as exc:
        found = sorted((_problem(name, err, lines) for err in exc.errors()), key=lambda p: p.line or 0)
        raise ConstitutionError(found) from None

    problems: list[Problem] = []
    principles: list[Principle] = []
    sources: dict[str, str] = {}
    brought_by: dict[str, int] = {}  # principle id -> the include entry it came through
    targets: dict[int, str] = {}  # include entry -> the file it names
    templates: dict[str, str] = {}
    template_sources: dict[str, tuple[str, int | None]] = {}
    me = path.resolve()
    for i, entry in enumerate(parsed.include):
        where = Problem(name, "", lines.get(("include", i)), f"include[{i}]")
        try:
            target = _include_path(entry, path)
        except ConstitutionError as exc:
            problems.append(_at(where, exc.problems[0].message))
            continue
        targets[i] = _display(target)
        if target.resolve() in (*stack, me):
            chain = " -> ".join(_display(p) for p in (*stack, me, target.resolve()))
            problems.append(_at(where, f"include cycle: {chain}"))
            continue
        if not exists(target):
            problems.append(_at(where, f"included file not found: {_display(target)}{suffix_hint(target, entry.path)}"))
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
        # (earlier include, its file, this file) -> the ids that come a second time: one problem each
        twice: dict[tuple[int, str, str], list[str]] = {}
        for p in picked:
            source = included.source_of(p.id) or _display(target)
            if p.id in sources:
                twice.setdefault((brought_by[p.id], sources[p.id], source), []).append(p.id)
                continue
            sources[p.id] = source
            brought_by[p.id] = i
            principles.append(p)
        for (earlier, first, second), ids in twice.items():
            problems.append(_at(where, _twice(ids, first, second, earlier, targets[earlier])))
        if included.templates:
            for key, value in included.templates.model_dump(exclude_none=True).items():
                if key not in templates:
                    templates[key] = value
                    template_sources[key] = included.template_source(key) or (_display(target), None)

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
        for key, value in parsed.templates.model_dump(exclude_none=True).items():
            templates[key] = value
            template_sources[key] = (name, lines.get(("templates", key)))
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
    composed._template_sources = template_sources
    return composed


def _twice(ids: list[str], first: str, second: str, earlier: int, earlier_target: str) -> str:
    """One message for all the principle ids that an include brings a second time.

    Args:
        ids: The ids.
        first: The file they already came from, through include ``earlier`` (which names ``earlier_target``).
        second: The file this include brings them from.
    """
    shown = ", ".join(repr(i) for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    through = f"include[{earlier}]" + ("" if _same_file(earlier_target, first) else f" ({earlier_target})")
    if _same_file(first, second):
        what = f"its principle {shown} is" if len(ids) == 1 else f"its {len(ids)} principles ({shown}) are"
        return (
            f"{second} is included twice: {what} already there through {through}; "
            "remove one of the includes, or make their select/exclude pick different principles"
        )
    what = (
        f"principle id {shown} of {second} already comes"
        if len(ids) == 1
        else (f"{len(ids)} principle ids of {second} ({shown}) already come")
    )
    return (
        f"{what} from {first} through {through}; ids must be unique: "
        "rename them in one file, or leave them out with exclude"
    )


def _same_file(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def _include_path(entry: Include, including: Path) -> Path:
    if Path(entry.path).suffix.lower() in YAML_SUFFIXES:
        return including.parent / entry.path
    return builtin_path(entry.path, including.parent)


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
    """What a YAML value is, with its article: "a mapping", "a list", "nothing (an empty value)"."""
    kinds = {dict: "a mapping", list: "a list", str: "a text", int: "a number", float: "a number", bool: "a boolean"}
    if value is None:
        return "nothing (an empty value)"
    return kinds.get(type(value), f"a {type(value).__name__}")


def _problem(name: str, err: ErrorDetails, lines: dict[Loc, int]) -> Problem:
    """Turn one pydantic error into a readable problem with a line number."""
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    message = err["msg"].removeprefix("Value error, ")
    value = err["input"]
    if kind == "duplicate_id":
        loc = (*loc, err["ctx"]["index"], "id")
    elif kind == "missing":
        message = "required field is missing"
        if loc == ("schema_version",):
            message += f"; the file should start with schema_version: {SCHEMA_VERSION}"
    elif kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown field {key!r}{did_you_mean(key, _fields_at(loc[:-1]))}"
    elif kind == "string_type" and isinstance(value, int | float | bool):
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        message = f"expected text but got the {_kind(value).removeprefix('a ')} {shown}; put it in quotes"
    elif kind == "string_type" and value is None:
        message = "has no value; write the text after the colon"
    elif kind == "string_too_short":
        message = "must not be empty"
    elif kind == "too_short" and loc[-1:] == ("tags",):
        message = "needs at least one tag (`cai principles tags` lists them)"
    elif kind == "too_short" and loc[-1:] == ("conversation",):
        message = "needs at least two messages: a user message and the assistant response that is critiqued"
    elif kind == "literal_error" and loc == ("schema_version",):
        message = f"unsupported schema_version {value!r}; this version of cai reads schema_version {SCHEMA_VERSION}"
    elif kind == "literal_error" and loc[-1:] == ("role",):
        message = f"unknown role {value!r}; a message's role is 'system', 'user' or 'assistant'"
    elif kind in ("dict_type", "model_type", "model_attributes_type") and len(loc) == 2 and loc[0] == "include":
        message = f"expected a builtin name, a path ending in .yaml, or a mapping with path:, got {_kind(value)}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        message = f"expected a mapping (key: value lines), got {_kind(value)}"
    elif kind == "list_type":
        message = f"expected a list (lines starting with '-'), got {_kind(value)}"
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
