"""Builders of small valid constitution documents for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def principle(pid: str, *tags: str, **fields: Any) -> dict[str, Any]:
    """A valid principle document with the given id and tags."""
    return {
        "id": pid,
        "title": f"Title of {pid}",
        "tags": list(tags) or ["general"],
        "critique_request": f"Critique under {pid}.",
        "revision_request": f"Revise under {pid}.",
        "comparison_question": f"Which response is better under {pid}?",
        **fields,
    }


def document(cid: str, principles: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A valid constitution document."""
    return {
        "schema_version": 1,
        "id": cid,
        "name": cid.title(),
        "description": f"The {cid} constitution.",
        "version": "1.0",
        "principles": principles,
        **fields,
    }


WriteYaml = Callable[[str, dict[str, Any]], Path]
