"""Reading prompt files: ``.jsonl``, ``.json`` (a list of rows), ``.csv`` (with a header row), ``.txt``.

Files are read as UTF-8 (a byte-order mark is skipped), line by line where the
format allows, so a large file is never held whole; errors name the 1-based line.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from constitution.yamlfile import not_a_regular_file
from engine.sources.items import PromptSetError, type_name
from engine.sources.readers import Streamed
from engine.sources.rows import Row

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")
"""File extensions :func:`load_prompts` reads."""


def load_file(path: Path, source: str) -> Streamed:
    """A reader of a prompt file, by its extension (nothing is read yet).

    Args:
        path: The file.
        source: The source as given, named in messages and in each prompt's ``source``.

    Raises:
        PromptSetError: Not a regular file, or an extension that is not a prompt file's.
    """
    problem = not_a_regular_file(path)
    if problem:
        raise PromptSetError(problem, file=source)
    suffix = path.suffix.lower()
    rows: Callable[[Path, str], Iterator[Row]]
    if suffix == ".jsonl":
        rows = jsonl_rows
    elif suffix == ".json":
        rows = _json_rows
    elif suffix == ".csv":
        rows = _csv_rows
    elif suffix == ".txt":
        rows = _txt_rows
    else:
        raise PromptSetError(
            f"unknown file extension {path.suffix or '(none)'!r}; prompt files are {', '.join(FILE_SUFFIXES)}, "
            "or a folder saved with datasets' save_to_disk",
            file=source,
        )
    return Streamed(lambda: rows(path, source), source, stem=path.stem, source=source)


def _read_text(path: Path, where: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptSetError(f"cannot read: {exc.strerror or exc}", file=where) from exc
    data = data.removeprefix(codecs.BOM_UTF8)  # stripped here, not by the codec, so exc.start indexes data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PromptSetError(f"not UTF-8 text (byte {data[exc.start]:#04x})", file=where, line=line) from exc
    if not text.strip():
        raise PromptSetError("empty file", file=where)
    return text


def _read_lines(path: Path, where: str) -> Iterator[str]:
    """The lines of a UTF-8 text file as they are read, each with its ``\\n`` (the last may lack one).

    Lines end at ``\\n`` only (``str.splitlines`` would also split at U+2028,
    which a JSON string may hold). Leading blank lines are held back until a
    line with text comes, so a file of blank lines raises ``empty file``
    before any of its lines is parsed.
    """
    leading: list[str] = []
    blank = True
    try:
        with path.open("rb") as handle:
            for number, data in enumerate(handle, start=1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PromptSetError(
                        f"not UTF-8 text (byte {data[exc.start]:#04x})", file=where, line=number
                    ) from exc
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if blank:
                    if not line.strip():
                        leading.append(line)
                        continue
                    blank = False
                    yield from leading
                    leading.clear()
                yield line
    except OSError as exc:
        raise PromptSetError(f"cannot read: {exc.strerror or exc}", file=where) from exc
    if blank:
        raise PromptSetError("empty file", file=where)


def jsonl_rows(path: Path, where: str) -> Iterator[Row]:
    """The rows of a JSONL file as they are read (blank lines skipped), each with its line.

    Raises:
        PromptSetError: A line that is not JSON, or the file cannot be read or is empty.
    """
    for number, line in enumerate(_read_lines(path, where), start=1):
        if not line.strip():
            continue
        line = line.removesuffix("\n").removesuffix("\r")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptSetError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=number) from exc
        yield Row(data, line=number)


def _json_rows(path: Path, where: str) -> Iterator[Row]:
    text = _read_text(path, where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=exc.lineno) from exc
    del text
    if not isinstance(data, list):
        raise PromptSetError(f"expected a JSON list of rows, got {type_name(data)}", file=where)
    for number, row in enumerate(data, start=1):
        yield Row(row, row=number)


_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _csv_lines(lines: Iterable[str]) -> Iterator[str]:
    """Split lines at a lone ``\\r`` too, as reading with ``newline=""`` does (the csv module counts those lines)."""
    for line in lines:
        if "\r" in line:
            yield from (part for part in _LONE_CR.split(line) if part)
        else:
            yield line


def _csv_rows(path: Path, where: str) -> Iterator[Row]:
    reader = csv.reader(_csv_lines(_read_lines(path, where)))
    try:
        header = next(reader, None)
        if header is None:
            return  # _read_lines has raised "empty file"
        line = reader.line_num + 1
        for values in reader:
            if values:
                if len(values) > len(header):
                    raise PromptSetError(
                        f"{len(values)} fields but the header has {len(header)}", file=where, line=line
                    )
                yield Row(dict(zip(header, values, strict=False)), line=line)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise PromptSetError(f"not valid CSV: {exc}", file=where, line=reader.line_num) from exc


def _txt_rows(path: Path, where: str) -> Iterator[Row]:
    for number, line in enumerate(_read_lines(path, where), start=1):
        if line.strip():
            yield Row({"messages": [{"role": "user", "content": line.strip()}]}, line=number)
