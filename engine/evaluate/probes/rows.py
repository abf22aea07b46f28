"""The evaluator's own JSONL sets (questions, templates, judge items): one reader, one row check.

Each set is a JSONL file, one object a line, blank lines skipped, every row with an ``id`` unique in the file.
A bad row is refused with ``FILE:LINE:`` and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

__all__ = ["read_object", "read_rows"]


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def read_rows(path: Path, what: str, parse: Callable[[str, str], T]) -> list[T]:
    """The rows of ``path``, each parsed by ``parse(line, "FILE:LINE")``, in file order.

    Args:
        path: The JSONL file.
        what: What the rows are, for messages ("questions", "counterfactual templates").
        parse: Turns one line into a row; raises ValueError naming the place it is given.

    Raises:
        ValueError: The file cannot be read or holds no rows, an id repeats, or ``parse`` refused a row.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    rows: list[T] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = parse(line, f"{path}:{number}")
        if row.id in seen:
            raise ValueError(f"{path}:{number}: id {row.id!r} already used on line {seen[row.id]}")
        seen[row.id] = number
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no {what}")
    return rows


def read_object(line: str, where: str, fields: tuple[str, ...]) -> dict[str, object]:
    """One JSONL row as an object holding exactly ``fields``.

    Raises:
        ValueError: Not JSON, not an object, or a field missing or unknown.
    """
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be an object")
    missing = [key for key in fields if key not in row]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)} (a row needs {', '.join(fields)})")
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field{'s' * (len(unknown) > 1)} {', '.join(unknown)}")
    return row
