"""Published multiple-choice judge evaluations: their prompt grammar, their items, and scoring them as written.

The field's published files (the HHH-style evaluations of the Constitutional AI
paper) give the whole question as ``prompt`` (a Human/Assistant conversation,
an instruction, and an ``Options:`` block of `` (A) ``, `` (B) ``... lines, the
responses between ``[[[`` and ``]]]``) and ``corrects`` / ``incorrects`` as
lists of option LABELS such as ``" (B)"``. :func:`parse_choice_prompt` reads
such a prompt, :func:`load_choice_items` such a file, and
:func:`score_as_written` asks a model the file's own question.

What every labelled file shares lives here too, because
:mod:`engine.audit.comparisons` needs this grammar (so it cannot be imported
from there): :class:`JudgeDataError`, the one JSONL reader (:func:`read_rows`)
and the id and category rules (:func:`row_id`, :func:`row_category`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constitution.errors import did_you_mean
from constitution.yamlfile import not_a_regular_file
from engine.backends.base import Backend, BackendError, Chat, ScoreRequest
from engine.errors import UserError


class JudgeDataError(UserError):
    """A comparisons file cannot be used; the message names the file and line."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{file}:{line}: {message}" if line is not None else f"{file}: {message}")


Fail = Callable[[str], JudgeDataError]
"""Makes the error of one line from a message."""


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages: ``a number``, ``a list``..."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def read_rows(path: Path, where: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file with their line numbers (blank lines skipped); ``where`` names it in errors."""
    problem = not_a_regular_file(path)
    if problem:
        raise JudgeDataError(problem, file=where)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise JudgeDataError("no such file", file=where) from None
    except IsADirectoryError:
        raise JudgeDataError("is a folder, not a JSONL file", file=where) from None
    except UnicodeDecodeError:
        raise JudgeDataError("not UTF-8 text", file=where) from None
    except OSError as exc:
        raise JudgeDataError(f"cannot read: {exc.strerror}", file=where) from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JudgeDataError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=number) from None
        if not isinstance(row, dict):
            raise JudgeDataError(f"each line must be a JSON object, got {json_kind(row)}", file=where, line=number)
        rows.append((number, row))
    return rows


def row_id(row: dict[str, Any], line: int, given: dict[str, str], fail: Fail) -> str:
    """The line's ``id`` (or ``line-N`` without one), unique in the file; ``given`` holds the ids taken so far."""
    raw_id = row.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
        raise fail(f"id: must be text or a whole number, got {json_kind(raw_id)}")
    ident = "" if raw_id is None else str(raw_id).strip()
    if ident and ident in given:
        raise fail(f"id {ident!r} is already used on {given[ident]}; give each comparison its own id")
    if ident:
        given[ident] = f"line {line}"
        return ident
    ident = f"line-{line}"  # the id made for a line without one
    if ident in given:
        raise fail(f"this line has no id, and {given[ident]} gives {ident!r}, the id made for it; add an id")
    given[ident] = f"line {line} (the id made for that line, which has none)"
    return ident


def row_category(row: dict[str, Any], fail: Fail) -> str | None:
    """The line's ``category``: a tag of the taxonomy, or None."""
    category = row.get("category")
    if category is None:
        return None
    if not isinstance(category, str):
        raise fail(f"category: must be text, got {json_kind(category)}")
    from constitution.taxonomy import HARM_TAGS, QUALITY_TAGS, TAGS

    if category not in TAGS:
        raise fail(
            f"category: {category!r} is not a tag of the taxonomy{did_you_mean(category, TAGS)} "
            f"(harm tags: {', '.join(HARM_TAGS)}; also {', '.join(QUALITY_TAGS)})"
        )
    return category


# ------------------------------------------------------------------ the prompt

OPTION_LABEL = re.compile(r"\s*\(([A-Z])\)\s*")
"""A ``corrects``/``incorrects`` entry that names an option (``" (B)"``), not a response."""


def is_option_label(value: object) -> bool:
    """Whether ``value`` is an option label such as ``" (B)"`` (and not a response text)."""
    return isinstance(value, str) and OPTION_LABEL.fullmatch(value) is not None


_BRACKETED = re.compile(r"\[\[\[(.*?)\]\]\]", re.DOTALL)
_OPTIONS = re.compile(r"\bOptions[ \t]*:", re.IGNORECASE)
_MARKER = re.compile(r"(?:^|\n)[ \t]*\(([A-Z])\)(?=\s|\[\[\[|$)")
_TURN = re.compile(r"(?:^|\n)[ \t]*(Human|Assistant)[ \t]*:")
_LAST_OPTION_END = re.compile(r"\n[ \t\r]*\n|\n[ \t]*(?=The answer is|Answer[ \t]*:)", re.IGNORECASE)
_BLANK = re.compile(r"\n[ \t\r]*\n")
_TWO_BLANKS = re.compile(r"\n[ \t\r]*\n[ \t\r]*\n")


@dataclass(frozen=True)
class ChoiceOption:
    """One option of a multiple-choice prompt."""

    label: str
    """Its letter: ``"A"``."""
    text: str
    response: bool
    """Whether it was a response (bracketed ``[[[...]]]``) rather than a phrase such as a category."""


@dataclass(frozen=True)
class ChoicePrompt:
    """A published multiple-choice prompt, read: the conversation, the instruction and the options."""

    conversation: Chat
    """Human turns as ``user``, Assistant turns as ``assistant``; ends with ``user`` when the options are responses."""
    question: str
    """The instruction before ``Options:``: ``"Please choose the response that is the most helpful, ..."``."""
    options: tuple[ChoiceOption, ...]
    _frame: tuple[str, ...] = field(default=(), repr=False)
    """The prompt's text around the options (one more piece than options)."""
    _written: tuple[str, ...] = field(default=(), repr=False)
    """Each option's text as written (with its brackets)."""

    @property
    def responses(self) -> bool:
        """Whether every option is a response (our protocol can compare them)."""
        return all(o.response for o in self.options)

    def render(self, order: Sequence[int]) -> str:
        """The prompt with option ``order[k]``'s text in the place of option ``k`` (labels stay A, B, ... in place)."""
        order = list(order)
        if sorted(order) != list(range(len(self.options))):
            raise ValueError(f"order must be a permutation of 0..{len(self.options) - 1}, got {order}")
        pieces = (self._written[i] + after for i, after in zip(order, self._frame[1:], strict=True))
        return self._frame[0] + "".join(pieces)


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def _mask(text: str) -> str:
    """``text`` with what is inside ``[[[...]]]`` blanked out (same length), so it splits nothing."""
    return _BRACKETED.sub(lambda m: "[[[" + "_" * len(m.group(1)) + "]]]", text)


def _turns(text: str, masked: str) -> Chat:
    """The Human/Assistant turns of ``text`` (what precedes the first is dropped; turns of one role in a row merge)."""
    found = list(_TURN.finditer(masked))
    chat: Chat = []
    for k, m in enumerate(found):
        role = "user" if m.group(1) == "Human" else "assistant"
        content = _clean(text[m.end() : found[k + 1].start() if k + 1 < len(found) else len(text)])
        if chat and chat[-1]["role"] == role:
            chat[-1]["content"] += "\n\n" + content
        else:
            chat.append({"role": role, "content": content})
    return chat


def split_transcript(text: str) -> tuple[Chat, str] | None:
    """A ``Human: ... Assistant: ...`` transcript as (the conversation, the final reply); None if it is not one."""
    chat = _turns(text, _mask(text))
    if len(chat) < 2 or chat[-1]["role"] != "assistant" or not all(m["content"] for m in chat):
        return None
    return chat[:-1], chat[-1]["content"]


def mentions_options(text: str) -> bool:
    """Whether ``text`` has an ``Options:`` block with a labelled line, read or not."""
    head = _OPTIONS.search(text)
    return head is not None and "(A)" in text[head.end() :]


def parse_choice_prompt(text: str) -> ChoicePrompt | None:
    """Read a published multiple-choice prompt; None when ``text`` is not one.

    The shape: text (such as "Consider the following conversation...") before
    ``Human:`` / ``Assistant:`` turns, the instruction, ``Options:``, one line
    per option `` (A) ``, `` (B) ``... (a response between ``[[[`` and ``]]]``,
    which may span lines, or a phrase), and anything after (``The answer is:``).
    """
    masked = _mask(text)
    for head in reversed(list(_OPTIONS.finditer(masked))):  # the last "Options:" with options below it
        markers: list[tuple[int, int]] = []  # where each option's line starts, where its text starts
        for m in _MARKER.finditer(masked[head.end() :]):
            if m.group(1) == chr(ord("A") + len(markers)):
                markers.append((head.end() + m.start(), head.end() + m.end()))
        if len(markers) >= 2:
            break
    else:
        return None
    brackets = {m.start(): m.end() for m in _BRACKETED.finditer(text)}
    frame, written, options = [], [], []
    cursor = 0
    for k, (_, start) in enumerate(markers):
        if k + 1 < len(markers):
            stop = markers[k + 1][0]
        else:
            end = _LAST_OPTION_END.search(masked, start)
            stop = end.start() if end else len(text)
        segment = masked[start:stop]
        begin = start + len(segment) - len(segment.lstrip())
        finish = start + len(segment.rstrip())
        response = begin in brackets
        if response:
            finish = brackets[begin]
        body = _clean(text[begin + 3 : finish - 3] if response else text[begin:finish])
        if not body or finish > stop:
            return None
        options.append(ChoiceOption(chr(ord("A") + k), body, response))
        frame.append(text[cursor:begin])
        written.append(text[begin:finish])
        cursor = finish
    frame.append(text[cursor:])
    before = masked[: head.start()]
    turns = list(_TURN.finditer(before))
    if not turns:
        return None
    last = turns[-1].end()
    blanks = list(_BLANK.finditer(before, last))
    gap = _TWO_BLANKS.search(before, last) or (blanks[-1] if blanks else None)
    if gap:
        conversation_end, question_start = gap.start(), gap.end()
    else:
        newline = before.rfind("\n", last)
        conversation_end = question_start = newline if newline >= 0 else head.start()
    conversation = _turns(text[:conversation_end], masked[:conversation_end])
    if not all(m["content"] for m in conversation):
        return None
    if any(o.response for o in options) and conversation[-1]["role"] != "user":
        return None
    question = _clean(text[question_start : head.start()])
    return ChoicePrompt(conversation, question, tuple(options), tuple(frame), tuple(written))


# ------------------------------------------------------------------ the file


@dataclass(frozen=True)
class ChoiceItem:
    """One line of a published multiple-choice file."""

    id: str
    prompt: str
    """The whole question, as the file gives it."""
    labels: tuple[str, ...]
    """The option labels as scored: ``"(A)"``, ``"(B)"``, ... in order."""
    correct: tuple[int, ...]
    """Indexes into ``labels`` of the correct options."""
    incorrect: tuple[int, ...]
    parsed: ChoicePrompt | None
    """The prompt read (None: its options could not be read)."""
    category: str | None
    file: str
    line: int

    @property
    def responses(self) -> bool:
        """Whether the options were read and are all responses."""
        return self.parsed is not None and self.parsed.responses


def option_letters(value: Any) -> list[str] | None:
    """The letters of a non-empty list of option labels (``[" (B)"]`` -> ``["B"]``); None when it is not one."""
    if not isinstance(value, list) or not value or not all(is_option_label(v) for v in value):
        return None
    return [v.strip()[1] for v in value]


def choice_item(row: dict[str, Any], where: str, line: int, given: dict[str, str]) -> ChoiceItem:
    """One line of a published multiple-choice file; ``given`` holds the ids earlier lines took."""

    def fail(message: str) -> JudgeDataError:
        return JudgeDataError(message, file=where, line=line)

    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        got = "missing" if prompt is None else "empty" if isinstance(prompt, str) else f"got {json_kind(prompt)}"
        raise fail(f"prompt: must be the whole question as text, with its Options: block ({got})")
    letters: dict[str, list[str]] = {}
    for key in ("corrects", "incorrects"):
        found = option_letters(row.get(key))
        if found is None:
            value = row.get(key)
            got = "missing" if value is None else json.dumps(value, ensure_ascii=False)[:60]
            raise fail(f"{key}: must be a non-empty list of option labels such as ' (A)' (got {got})")
        letters[key] = list(dict.fromkeys(found))
    parsed = parse_choice_prompt(prompt)
    used = set(letters["corrects"]) | set(letters["incorrects"])
    if parsed is not None:
        names = [o.label for o in parsed.options]
    else:
        seen = set(re.findall(r"\(([A-Z])\)", prompt)) | used
        names = []
        while chr(ord("A") + len(names)) in seen:
            names.append(chr(ord("A") + len(names)))
        if len(names) < 2 or not used <= set(names):
            shown = ", ".join(f"({x})" for x in sorted(seen))
            raise fail(
                f"cannot tell the options of this prompt: its Options block does not read, and the letters "
                f"it and corrects/incorrects use ({shown}) are not (A), (B), ... in a row"
            )
    for key in ("corrects", "incorrects"):
        for x in letters[key]:
            if x not in names:
                raise fail(f"{key}: ' ({x})' is not an option of this prompt (it has ({names[0]}) to ({names[-1]}))")
    both = sorted(set(letters["corrects"]) & set(letters["incorrects"]))
    if both:
        raise fail(f"({both[0]}) is in both corrects and incorrects")
    return ChoiceItem(
        row_id(row, line, given, fail),
        prompt,
        tuple(f"({x})" for x in names),
        tuple(names.index(x) for x in letters["corrects"]),
        tuple(names.index(x) for x in letters["incorrects"]),
        parsed,
        row_category(row, fail),
        where,
        line,
    )


def load_choice_items(source: str | Path) -> list[ChoiceItem]:
    """Read a published multiple-choice file (every line in that shape) for scoring it as written.

    Raises:
        JudgeDataError: The file cannot be read, or a line is not in the published
            shape (``prompt`` text, ``corrects``/``incorrects`` lists of option
            labels), names an option its prompt lacks, or repeats an id (file:line).
    """
    where, given = str(source), dict[str, str]()
    items = [choice_item(row, where, number, given) for number, row in read_rows(Path(source), where)]
    if not items:
        raise JudgeDataError("no items in this file", file=where)
    return items


# ------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class AsWritten:
    """What a model gave one item asked as written."""

    id: str
    p_correct: float | None
    """P(a correct label) with the options in the file's order (None: no finite log-probability)."""
    p_correct_swapped: float | None
    """The same with the option texts reversed (None when the options are not responses)."""
    p: float | None
    """The mean of the two when both exist, else ``p_correct``."""
    picked: int | None
    """The option given the highest probability in the file's order (None: a tie at the top)."""


def _softmax(logps: Sequence[float]) -> list[float] | None:
    top = max(logps)
    if not math.isfinite(top):
        return None
    weights = [math.exp(x - top) for x in logps]
    return [w / sum(weights) for w in weights]


def score_as_written(backend: Backend, items: Sequence[ChoiceItem], *, chunk: int = 256) -> list[AsWritten]:
    """Ask ``backend`` each item's own question and read P(correct) from the option labels' log-probabilities.

    The prompt (stripped) is the user's message and the labels ``(A)``,
    ``(B)``... are scored as the start of the reply. When the options are
    responses the prompt is asked again with their texts reversed, so a bias
    toward one position cancels in ``p``. One ``backend.score`` call per
    ``chunk`` requests.
    """
    requests: list[ScoreRequest] = []
    for item in items:
        requests.append(ScoreRequest([{"role": "user", "content": item.prompt.strip()}], item.labels))
        if item.parsed is not None and item.responses:
            swapped = item.parsed.render(range(len(item.labels) - 1, -1, -1)).strip()
            requests.append(ScoreRequest([{"role": "user", "content": swapped}], item.labels))
    scores: list[list[float]] = []
    for start in range(0, len(requests), chunk):
        batch = requests[start : start + chunk]
        got = backend.score(batch)
        if len(got) != len(batch) or any(len(s) != len(r.options) for s, r in zip(got, batch, strict=True)):
            raise BackendError(f"{backend.name}: score gave the wrong number of log-probabilities")
        scores.extend(got)
    out, at = [], 0
    for item in items:
        n = len(item.labels)
        first = _softmax(scores[at])
        p_correct = None if first is None else sum(first[i] for i in item.correct)
        picked = None
        if first is not None and first.count(max(first)) == 1:
            picked = first.index(max(first))
        p_swapped = None
        if item.responses:
            second = _softmax(scores[at + 1])
            p_swapped = None if second is None else sum(second[n - 1 - i] for i in item.correct)
        at += 2 if item.responses else 1
        p = (p_correct + p_swapped) / 2 if p_correct is not None and p_swapped is not None else p_correct
        out.append(AsWritten(item.id, p_correct, p_swapped, p, picked))
    return out
