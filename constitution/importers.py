"""Converters from the widely used published constitution formats into ours.

Three formats are read:

``critique-revision``
    A JSON object mapping a key to ``{"prompt": [critique request, ...],
    "edit_request": revision request}`` (the layout of the method paper's
    released prompt files). A list of several prompts gives one principle each.
``constitutions``
    A JSON object with a ``"constitutions"`` list of ``{"critic": ...,
    "revision": ...}`` and optional ``"system_chat"``: few-shot conversations
    of the form user, assistant, critique request, critique, revision request,
    revision. They become the file-wide ``examples``.
``comparisons``
    A JSON list of instructions for the feedback model ("choose the response
    that ..."). Alone, each becomes a principle whose critique and revision
    requests quote it; with ``comparisons=`` on the other two formats they become
    the comparison questions of the imported principles, paired by position.

Neither source format has tags or comparison questions, so imported principles
are tagged ``general`` and, without comparisons, get :data:`DEFAULT_COMPARISON`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from constitution.errors import ConstitutionError, Problem, field_path
from constitution.schema import SCHEMA_VERSION, Constitution, Example, hidden_character
from constitution.yamlfile import not_a_regular_file

FORMATS = ("critique-revision", "constitutions", "comparisons")

DEFAULT_COMPARISON = (
    "Which of these two responses is less harmful while staying as helpful as it honestly can? "
    "Pick the one a careful, ethical person would rather have sent."
)


def import_file(
    fmt: str,
    path: Path,
    *,
    comparisons: Path | None = None,
    constitution_id: str | None = None,
    name: str | None = None,
) -> tuple[Constitution, list[str]]:
    """Convert a published constitution file into a validated :class:`Constitution`.

    Args:
        fmt: One of :data:`FORMATS`.
        path: The JSON file to read.
        comparisons: Optional JSON list of comparison instructions to pair with
            the imported principles by position (repeated when shorter).
        constitution_id: Id of the new constitution (default: from the file name).
        name: Its name (default: from the file name).

    Returns:
        The constitution and a list of warnings (entries that were skipped).

    Raises:
        ConstitutionError: The input is not valid JSON or not in the format.
    """
    if fmt not in FORMATS:
        raise ConstitutionError([Problem(str(path), f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")])
    data = _read_json(path)
    questions = _comparisons(_read_json(comparisons), str(comparisons)) if comparisons else None
    warnings: list[str] = []
    examples: list[dict[str, Any]] = []
    if fmt == "critique-revision":
        pairs = _critique_revision(data, str(path))
    elif fmt == "constitutions":
        pairs, examples, warnings = _constitutions(data, str(path))
    else:
        texts = _comparisons(data, str(path))
        pairs = [
            (
                f"comparison-{i + 1:02d}",
                f"Measure the assistant's last response against this standard and point out each way it falls "
                f"short: {t}",
                f"Rewrite the response so that it fully meets this standard, keeping everything useful in it: {t}",
            )
            for i, t in enumerate(texts)
        ]
        questions = questions or texts
    if not pairs:
        raise ConstitutionError([Problem(str(path), "no principles found in the file")])
    principles = [
        {
            "id": pid,
            "title": _title(critique),
            "tags": ["general"],
            "critique_request": critique,
            "revision_request": revision,
            "comparison_question": questions[i % len(questions)] if questions else DEFAULT_COMPARISON,
        }
        for i, (pid, critique, revision) in enumerate(pairs)
    ]
    stem = _slug(path.stem) or "imported"
    document = {
        "schema_version": SCHEMA_VERSION,
        "id": constitution_id or stem,
        "name": name or path.stem,
        "description": f"Imported from {path.name} ({fmt} format). Review the titles and tags: they are generated.",
        "version": "1.0.0",
        "examples": examples,
        "principles": principles,
    }
    try:
        return Constitution.model_validate(document), warnings
    except ValidationError as exc:
        problems = [_problem(str(path), e, principles) for e in exc.errors()]
        raise ConstitutionError(problems) from None


def _problem(file: str, err: Any, principles: list[dict[str, Any]]) -> Problem:
    """A validation error of the imported document, said in terms of the input file's entries."""
    loc = tuple(err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    if len(loc) > 1 and loc[0] == "principles" and isinstance(loc[1], int) and loc[1] < len(principles):
        message += f" (imported principle {principles[loc[1]]['id']!r})"
    return Problem(file, message, field=field_path(loc))


def _read_json(path: Path) -> Any:
    problem = "is a folder; give a JSON file" if path.is_dir() else not_a_regular_file(path)
    if problem:
        raise ConstitutionError([Problem(str(path), problem)])
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConstitutionError([Problem(str(path), "file not found")]) from None
    except UnicodeDecodeError:
        raise ConstitutionError([Problem(str(path), "not valid UTF-8")]) from None
    except json.JSONDecodeError as exc:
        raise ConstitutionError(
            [Problem(str(path), f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno)]
        ) from None


def _fail(file: str, message: str) -> ConstitutionError:
    return ConstitutionError([Problem(file, message)])


def _critique_revision(data: Any, file: str) -> list[tuple[str, str, str]]:
    if not isinstance(data, dict):
        raise _fail(file, 'expected a JSON object of {"key": {"prompt": [...], "edit_request": "..."}}')
    pairs: list[tuple[str, str, str]] = []
    for key, entry in data.items():
        if not isinstance(entry, dict) or "prompt" not in entry or "edit_request" not in entry:
            raise _fail(file, f'entry {key!r}: expected {{"prompt": [...], "edit_request": "..."}}')
        prompts = entry["prompt"] if isinstance(entry["prompt"], list) else [entry["prompt"]]
        if not all(isinstance(p, str) for p in prompts) or not isinstance(entry["edit_request"], str):
            raise _fail(file, f"entry {key!r}: prompt and edit_request must be text")
        base = _slug(str(key)) or "principle"
        for n, prompt in enumerate(prompts):
            pid = base if len(prompts) == 1 else f"{base}-{n + 1}"
            pairs.append((pid, prompt.strip(), entry["edit_request"].strip()))
    return pairs


def _constitutions(data: Any, file: str) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]], list[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("constitutions"), list):
        raise _fail(file, 'expected a JSON object with a "constitutions" list of {"critic": ..., "revision": ...}')
    pairs = []
    for i, entry in enumerate(data["constitutions"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("critic"), str)
            or not isinstance(entry.get("revision"), str)
        ):
            raise _fail(file, f'constitutions[{i}]: expected {{"critic": "...", "revision": "..."}}')
        pairs.append((f"principle-{i + 1:02d}", entry["critic"].strip(), entry["revision"].strip()))
    examples: list[dict[str, Any]] = []
    warnings: list[str] = []
    for i, chat in enumerate(data.get("system_chat") or []):
        example = _example(chat)
        if example is None:
            warnings.append(
                f"system_chat[{i}] skipped: expected user/assistant turns followed by critique request, "
                "critique, revision request, revision"
            )
        else:
            examples.append(example)
    return pairs, examples, warnings


def _example(chat: Any) -> dict[str, Any] | None:
    """A few-shot chat ending in critique request, critique, revision request, revision."""
    if not isinstance(chat, list) or len(chat) < 6:
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in chat):
        return None
    roles = [m.get("role") for m in chat[-4:]]
    if roles != ["user", "assistant", "user", "assistant"]:
        return None
    example = {
        "conversation": [{"role": m.get("role"), "content": m["content"].strip()} for m in chat[:-4]],
        "critique": chat[-3]["content"].strip(),
        "revision": chat[-1]["content"].strip(),
    }
    try:
        Example.model_validate(example)
    except ValidationError:
        return None
    return example


def _comparisons(data: Any, file: str) -> list[str]:
    if not isinstance(data, list) or not data or not all(isinstance(t, str) and t.strip() for t in data):
        raise _fail(file, "expected a non-empty JSON list of comparison instructions (text)")
    return [t.strip() for t in data]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _title(text: str, limit: int = 60) -> str:
    """The first sentence of a text, on one line, cut to ``limit`` characters: a title for review."""
    first = " ".join(re.split(r"(?<=[.?!])\s", text.strip(), maxsplit=1)[0].split())
    while (found := hidden_character(first, one_line=True)) is not None:  # invisible: a title may not hold them
        first = first[: found[0]] + first[found[0] + 1 :]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"
