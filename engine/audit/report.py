"""``cai judge-eval``'s whole report: every judge under every protocol on one labelled file, and their agreement.

A :class:`JudgeReport` holds one :class:`~engine.audit.accuracy.JudgeEval`
per judge and protocol, and per protocol the
:class:`~engine.audit.agreement.Agreement` of the judges when there
are several. It renders as text, as JSON (``--json``) and as an HTML page
with the reliability diagram and the accuracy-coverage curve (``--html``,
:mod:`engine.audit.html`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.audit.accuracy import PROTOCOLS, JudgeEval
from engine.audit.agreement import Agreement, agreement
from engine.records.base import SCHEMA_VERSION


@dataclass(frozen=True)
class JudgeReport:
    """Every judge under every protocol on one labelled file."""

    file: str
    evaluations: tuple[JudgeEval, ...]
    agreements: dict[str, Agreement]
    """Per protocol, how the judges agree (only with two judges or more)."""
    notes: tuple[str, ...] = ()
    """What the reader must know about the file (protocols it cannot be scored by...)."""

    @classmethod
    def of(cls, file: str, evaluations: Sequence[JudgeEval], notes: Sequence[str] = ()) -> JudgeReport:
        """The report of these evaluations, with the judges' agreement per protocol."""
        agreements = {}
        for protocol in PROTOCOLS:
            same = [e for e in evaluations if e.protocol == protocol]
            if len(same) > 1:
                agreements[protocol] = agreement(same)
        return cls(file, tuple(evaluations), agreements, tuple(notes))

    @property
    def at_chance(self) -> list[JudgeEval]:
        """The evaluations whose interval reaches 50%."""
        return [e for e in self.evaluations if e.at_chance]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "schema_version": SCHEMA_VERSION,
            "file": self.file,
            "protocols": {p: d for p, d in PROTOCOLS.items() if any(e.protocol == p for e in self.evaluations)},
            "notes": list(self.notes),
            "evaluations": [e.to_dict() for e in self.evaluations],
            "agreements": {p: a.to_dict() for p, a in self.agreements.items()},
        }

    def render(self) -> str:
        """The plain-text report: each evaluation, then the agreements, then the notes."""
        parts = [e.render() for e in self.evaluations]
        parts += [f"protocol {p}: {a.render()}" for p, a in self.agreements.items()]
        parts += [f"note: {n}" for n in self.notes]
        return "\n\n".join(parts)
