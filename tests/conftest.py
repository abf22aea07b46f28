"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import WriteYaml


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteYaml:
    """Write a document as YAML under tmp_path and return its path."""

    def write(name: str, data: dict[str, Any]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write
