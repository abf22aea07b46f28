"""The principle file format (schema version 1) as frozen pydantic models.

A file is a :class:`Constitution`: metadata, optional ``include`` entries that
compose other files, optional prompt ``templates`` and a list of
:class:`Principle`. Every model forbids unknown keys. ``principles/README.md``
is the guide for authors; the JSON Schema (``cai principles schema``) is
generated from these classes, so the field descriptions here are what editors
show.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from constitution.errors import did_you_mean
from constitution.taxonomy import TAGS

SCHEMA_VERSION = 1

_SLUG = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings, overrides and isolates: they make text display in another order than it is read."""

_CONTROL_NAMES = {
    "\0": "NULL",
    "\a": "BELL",
    "\b": "BACKSPACE",
    "\t": "CHARACTER TABULATION",
    "\n": "LINE FEED",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
}


def character_name(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``: a character by code point and Unicode name."""
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(char, "")
    if not name:
        name = "(a control character)" if unicodedata.category(char) == "Cc" else "(unnamed)"
    return f"U+{ord(char):04X} {name}"


def hidden_character(text: str, one_line: bool) -> tuple[int, str] | None:
    """The first character a field of this kind may not hold, with its index, or None.

    A one-line field (an id, a title, a name) may hold no control characters (tabs and
    line breaks included), no invisible format characters (zero-width spaces, bidi
    controls, byte order marks...), no line or paragraph separators and no surrogates.
    A long text may hold line breaks and tabs, and format characters that scripts and
    emoji need (zero-width joiners, soft hyphens...), but no other control character,
    no bidi embedding, override or isolate, no byte order mark and no surrogate.
    """
    if one_line:
        if text.isprintable():  # the common case, in C: nothing in Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs but ' '
            return None
        bad = ("Cc", "Cf", "Cs", "Zl", "Zp")
        return next(((i, c) for i, c in enumerate(text) if unicodedata.category(c) in bad), None)
    if text.replace("\n", "").replace("\t", "").isprintable():
        return None
    for i, c in enumerate(text):
        category = unicodedata.category(c)
        if (category == "Cc" and c not in "\n\t") or category == "Cs" or c in BIDI_CONTROLS or c == "\ufeff":
            return i, c
    return None


def show_hidden(text: str, multiline: bool = True) -> str:
    """Text for a terminal, with control and invisible characters written as ``<U+202E>``.

    Line breaks and tabs stay as they are when ``multiline``.
    """
    keep = "\n\t" if multiline else ""
    if (text.replace("\n", "").replace("\t", "") if multiline else text).isprintable():
        return text
    hidden = ("Cc", "Cf", "Cs", "Zl", "Zp")
    return "".join(f"<U+{ord(c):04X}>" if c not in keep and unicodedata.category(c) in hidden else c for c in text)


def _refuse_hidden(value: str, one_line: bool) -> str:
    found = hidden_character(value, one_line)
    if found is None:
        return value
    index, char = found
    where = f"contains {character_name(char)} (character {index + 1})"
    if one_line:
        raise ValueError(
            f"{where}; a one-line field may hold no control characters, line breaks or invisible "
            "formatting characters (bidi controls, zero-width spaces): delete it"
        )
    if char in BIDI_CONTROLS:
        raise ValueError(f"{where}: bidi controls make text display in another order than it is read; delete it")
    if char == "\ufeff":
        raise ValueError(f"{where}: a byte order mark inside a text is left over from joining files; delete it")
    raise ValueError(f"{where}: texts may hold line breaks and tabs but no other control characters; delete it")


def _one_line(value: str) -> str:
    return _refuse_hidden(value, one_line=True)


def _long_text(value: str) -> str:
    return _refuse_hidden(value, one_line=False)


def _number(value: Any) -> Any:
    """Refuse what pydantic would quietly turn into a number: booleans and texts."""
    if isinstance(value, bool):
        raise ValueError(
            f"expected a number such as 1.0, got the boolean {str(value).lower()} "
            "(YAML reads true, false, yes, no, on and off as booleans)"
        )
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise ValueError(f"expected a number such as 1.0 or 0.5, got the text {value!r}") from None
        raise ValueError(f"expected a number, got the text {value!r}; remove the quotes")
    return value


def _schema_version(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be the number {SCHEMA_VERSION}, not the boolean {str(value).lower()}")
    if isinstance(value, str):
        hint = "; remove the quotes" if value.strip() == str(SCHEMA_VERSION) else ""
        raise ValueError(f"must be the number {SCHEMA_VERSION}, not the text {value!r}{hint}")
    return value


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id: use lowercase letters and digits, "
            "with - or _ between words (for example 'no-weapon-synthesis')"
        )
    return value


def _tag(value: str) -> str:
    if value not in TAGS:
        raise ValueError(
            f"unknown tag {value!r}{did_you_mean(value, TAGS)} (the tags are listed in principles/README.md)"
        )
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Slug = Annotated[
    str, AfterValidator(_one_line), AfterValidator(_slug), Field(json_schema_extra={"pattern": _SLUG.pattern})
]
Tag = Annotated[str, AfterValidator(_one_line), AfterValidator(_tag), Field(json_schema_extra={"enum": sorted(TAGS)})]
Text = Annotated[str, AfterValidator(_text), AfterValidator(_long_text), Field(min_length=1)]
"""A text that may run over several lines (a request, a description, a message)."""
Line = Annotated[str, AfterValidator(_text), AfterValidator(_one_line), Field(min_length=1)]
"""A one-line text (a title, a name)."""
PlainLine = Annotated[str, AfterValidator(_one_line)]
"""A one-line text that may be empty."""
Number = Annotated[float, BeforeValidator(_number)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Message(_Model):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks: system, user or assistant.")
    content: Text = Field(description="What was said.")


class Example(_Model):
    """A few-shot example: a conversation, its ideal critique and revision."""

    conversation: list[Message] = Field(
        min_length=2,
        description="The conversation; it ends with the assistant response that is critiqued.",
    )
    critique: Text = Field(description="The ideal critique of the last assistant message under the principle.")
    revision: Text | None = Field(
        default=None,
        description="The ideal rewrite of the last assistant message. Leave it out when nothing needs to change.",
    )

    @model_validator(mode="after")
    def _check_conversation(self) -> Example:
        roles = [m.role for m in self.conversation]
        if roles[-1] != "assistant":
            raise ValueError("the conversation must end with the assistant response that is critiqued")
        if "user" not in roles:
            raise ValueError("the conversation needs at least one user message")
        if "system" in roles[1:]:
            raise ValueError("a system message may only come first")
        return self

    @property
    def needs_change(self) -> bool:
        """Whether the revision differs from the critiqued response."""
        return self.revision is not None and self.revision != self.conversation[-1].content

    @property
    def revised(self) -> str:
        """The response after revision (the original one when nothing changes)."""
        return self.conversation[-1].content if self.revision is None else self.revision


class Principle(_Model):
    """One rule of the constitution, with the three prompts that apply it."""

    id: Slug = Field(description="Stable identifier (slug), unique in the composed constitution.")
    title: Line = Field(description="Short human-readable title.")
    tags: list[Tag] = Field(min_length=1, description="Categories from the fixed taxonomy (principles/README.md).")
    weight: Number = Field(default=1.0, gt=0, description="Relative weight when principles are sampled.")
    critique_request: Text = Field(
        description="Asks the critic to find where the assistant's last response breaks this principle."
    )
    revision_request: Text = Field(description="Asks the model to rewrite its response to fix what the critique found.")
    comparison_question: Text = Field(
        description="Asks the judge which of two responses better follows this principle."
    )
    examples: list[Example] = Field(default_factory=list, description="Optional few-shot examples.")

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        twice = next((t for i, t in enumerate(tags) if t in tags[:i]), None)
        if twice is not None:
            raise ValueError(f"tag {twice!r} is listed twice")
        return tags


class Selector(_Model):
    """Principles picked by id or by tag (a principle matches if either matches)."""

    ids: list[Slug] = Field(default_factory=list, description="Principle ids.")
    tags: list[Tag] = Field(default_factory=list, description="Taxonomy tags.")

    def matches(self, principle: Principle) -> bool:
        """Whether the principle has one of the ids or one of the tags."""
        return principle.id in self.ids or any(t in self.tags for t in principle.tags)


class Include(_Model):
    """Another constitution composed into this one."""

    path: Line = Field(
        description="A builtin name (e.g. 'harmlessness'), or a path ending in .yaml/.yml relative to this file."
    )
    select: Selector | None = Field(default=None, description="Keep only these principles.")
    exclude: Selector | None = Field(default=None, description="Drop these principles.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string"}, handler(schema)]}


class Templates(_Model):
    """Replacements for the built-in Jinja2 prompt templates (rendered in a sandbox)."""

    critique: str | None = Field(default=None, description="Template of the critique prompt.")
    revision: str | None = Field(default=None, description="Template of the revision prompt.")
    comparison: str | None = Field(default=None, description="Template of the judge's comparison prompt.")

    @field_validator("critique", "revision", "comparison")
    @classmethod
    def _renders(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is not None:
            _long_text(source)
            # imported here: jinja2 costs ~40 ms and most files have no templates
            from constitution.template_checks import check_template

            check_template(str(info.field_name), source, tuple(Principle.model_fields))
        return source


class Constitution(_Model):
    """A constitution file, or (after :func:`constitution.load`) a composed constitution."""

    model_config = ConfigDict(title="Constitution")

    schema_version: Annotated[Literal[1], BeforeValidator(_schema_version)] = Field(
        description="Version of this file format; always 1 for now."
    )
    id: Slug = Field(description="Identifier of the constitution (slug).")
    name: Line = Field(description="Human-readable name.")
    description: Text = Field(description="What this constitution is for.")
    version: Line = Field(description="Version of the constitution's content, e.g. '1.0.0' (a string).")
    license: PlainLine | None = Field(default=None, description="License of the texts, e.g. 'CC-BY-4.0'.")
    authors: list[PlainLine] = Field(default_factory=list, description="Who wrote it.")
    include: list[Include] = Field(default_factory=list, description="Other constitutions to compose into this one.")
    templates: Templates | None = Field(default=None, description="Prompt templates replacing the built-in ones.")
    examples: list[Example] = Field(
        default_factory=list, description="Few-shot examples for principles of this file that have none of their own."
    )
    principles: list[Principle] = Field(default_factory=list, description="The principles.")

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _template_sources: dict[str, tuple[str, int | None]] = PrivateAttr(default_factory=dict)

    @field_validator("templates")
    @classmethod
    def _drop_empty_templates(cls, templates: Templates | None) -> Templates | None:
        return templates if templates and templates.model_dump(exclude_none=True) else None

    @field_validator("principles")
    @classmethod
    def _unique_ids(cls, principles: list[Principle]) -> list[Principle]:
        first: dict[str, int] = {}
        for i, p in enumerate(principles):
            if p.id in first:
                raise PydanticCustomError(
                    "duplicate_id",
                    "duplicate principle id '{id}' (first used by principles[{first}])",
                    {"id": p.id, "first": first[p.id], "index": i},
                )
            first[p.id] = i
        return principles

    @model_validator(mode="after")
    def _not_empty(self) -> Constitution:
        if not self.principles and not self.include:
            raise ValueError("a constitution needs at least one principle or one include")
        return self

    def principle(self, principle_id: str) -> Principle:
        """Return the principle with this id.

        Raises:
            KeyError: With a "did you mean" hint when the id is unknown.
        """
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(f"no principle {principle_id!r}{did_you_mean(principle_id, [p.id for p in self.principles])}")

    def source_of(self, principle_id: str) -> str | None:
        """The file a principle was loaded from, when known."""
        return self._sources.get(principle_id)

    def template_source(self, kind: str) -> tuple[str, int | None] | None:
        """The file (and line) a custom template was loaded from, when known."""
        return self._template_sources.get(kind)

    def hand_down_examples(self) -> Constitution:
        """The same constitution with file-wide examples given to each principle that has none."""
        if not self.examples:
            return self
        principles = [p if p.examples else p.model_copy(update={"examples": self.examples}) for p in self.principles]
        handed = self.model_copy(update={"examples": [], "principles": principles})
        handed._sources = self._sources
        handed._template_sources = self._template_sources
        return handed

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON form: same rules, same hash, whatever the formatting.

        File-wide examples count as the examples of the principles that inherit them,
        so a file and its loaded form hash alike (includes are not resolved here:
        hash what :func:`constitution.load` returns).
        """
        canonical = json.dumps(
            self.hand_down_examples().model_dump(mode="json", exclude={"include"}),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of principle files, for editors and other tools."""
    schema = Constitution.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
