"""Safe, bounded reading of YAML principle files, keeping line numbers.

Only plain data is accepted: ``yaml.SafeLoader`` builds no objects and runs no
code. Before anything is built, the composed node graph is checked, so a file
that is too large, nested too deeply or that expands through aliases into a
"billion laughs" bomb is refused with a message instead of eating memory.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from constitution.errors import ConstitutionError, Problem, field_path

MAX_FILE_BYTES = 1024 * 1024
"""Principle files larger than this are refused (the shipped ones are ~40 KB)."""
MAX_NODES = 100_000
"""Most YAML nodes a file may hold once every alias is expanded."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a file may use."""

Loc = tuple[str | int, ...]


def read_yaml(path: Path, label: str | None = None) -> tuple[Any, dict[Loc, int]]:
    """Read one YAML file as plain data.

    Args:
        path: The file to read.
        label: How to name the file in messages (defaults to ``str(path)``).

    Returns:
        The data, and a map from each field location to its 1-based line.

    Raises:
        ConstitutionError: The file is missing, too big, not UTF-8, not YAML,
            empty, or unsafe to expand.
    """
    name = label or str(path)

    def fail(message: str, line: int | None = None) -> ConstitutionError:
        return ConstitutionError([Problem(name, message, line)])

    try:
        if not path.exists():
            raise fail(f"file not found{suffix_hint(path, name)}")
        if path.is_dir():
            raise fail("is a folder, not a file")
        special = not_a_regular_file(path)
        if special:
            raise fail(special)
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        size = max(len(raw), path.stat().st_size)
        raise fail(f"file is {size / 1024 / 1024:.1f} MiB; principle files are limited to 1 MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise fail(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
            line,
        ) from None
    return parse_yaml(text, name)


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a data file (a pipe, socket or device), or None when it can.

    Opening a named pipe or a device for reading blocks or never ends
    (``/dev/zero``), so every reader of a file a user names (principle files
    here; prompt sets, comparisons, run configs and reports in ``engine``)
    asks this before opening it. A path that does not exist or cannot be
    inspected gives None: opening it then raises the ordinary error.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"is {kind}, not a regular file; refused (reading it could block forever): give a file"


def suffix_hint(path: Path, written: str | None = None) -> str:
    """``"; parts/base.yaml exists: write the name with its .yaml suffix"`` when ``path`` lacks one that a file has.

    Args:
        path: The path that does not exist.
        written: The name as the user wrote it (default: ``path``).
    """
    if path.suffix.lower() in (".yaml", ".yml"):
        return ""
    for suffix in (".yaml", ".yml"):
        try:
            found = path.with_name(path.name + suffix).is_file()
        except (OSError, ValueError):  # an empty name, a name too long, a NUL byte
            found = False
        if found:
            return f"; {written or path}{suffix} exists: write the name with its {suffix} suffix"
    return ""


def parse_yaml(text: str, name: str) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML text; see :func:`read_yaml`."""
    try:
        _check_depth(text, name)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ConstitutionError(
                    [Problem(name, "file is empty; a constitution needs at least an id and principles")]
                )
            lines: dict[Loc, int] = {}
            _check_graph(node, name, lines)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark and exc.context_mark and mark.line >= len(text.splitlines()):
            mark = exc.context_mark  # ran off the end (an unclosed quote): where it started says more
        message = " ".join(m for m in (exc.context, exc.problem) if m) or "invalid YAML"
        if "could not determine a constructor" in message:
            tag = exc.problem.split()[-1] if exc.problem else ""
            message = f"tag {tag} is not allowed; principle files hold plain data only"
        elif mark and "\t" in (text.splitlines()[mark.line : mark.line + 1] or [""])[0][: mark.column + 1]:
            message += " (YAML does not allow tabs for indentation: use spaces)"
        raise ConstitutionError([Problem(name, f"YAML error: {message}", mark.line + 1 if mark else None)]) from None
    except yaml.YAMLError as exc:
        raise ConstitutionError([Problem(name, f"YAML error: {exc}")]) from None
    except RecursionError:
        raise ConstitutionError([Problem(name, f"nested more than {MAX_DEPTH} levels deep")]) from None
    return data, lines


# libyaml's loader is ~10x faster than the pure-Python one, but its composer
# recurses in C: deep nesting would crash the process, so _check_depth reads the
# event stream (iterative in libyaml) and stops at MAX_DEPTH before composing.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_depth(text: str, name: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else None
                raise ConstitutionError([Problem(name, f"nested more than {MAX_DEPTH} levels deep", line)])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_graph(root: yaml.Node, name: str, lines: dict[Loc, int]) -> None:
    """Record lines, and refuse duplicate keys, deep nesting and alias bombs."""
    expanded: dict[int, int] = {}  # id(node) -> node count once aliases are expanded
    in_progress: set[int] = set()

    def fail(message: str, node: yaml.Node, loc: Loc = ()) -> ConstitutionError:
        return ConstitutionError([Problem(name, message, node.start_mark.line + 1, field_path(loc))])

    def walk(node: yaml.Node, loc: Loc, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise fail(f"nested more than {MAX_DEPTH} levels deep", node)
        lines.setdefault(loc, node.start_mark.line + 1)
        key = id(node)
        if key in in_progress:
            raise fail("an alias refers to a node that contains it (recursive structure)", node)
        if key in expanded:  # an alias: count its size again, but don't walk it again
            return expanded[key]
        in_progress.add(key)
        count = 1
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                count += walk(item, (*loc, i), depth + 1)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                label = k.value if isinstance(k, yaml.ScalarNode) else repr(k.value)
                line = k.start_mark.line + 1
                if label in seen:
                    raise fail(f"duplicate key {label!r} (first at line {seen[label]})", k, (*loc, label))
                seen[label] = line
                lines.setdefault((*loc, label), line)
                count += walk(v, (*loc, label), depth + 1)
        in_progress.discard(key)
        expanded[key] = count
        if count > MAX_NODES:
            raise fail(f"expands to more than {MAX_NODES:,} values (an alias bomb?); refused", node)
        return count

    walk(root, (), 0)
