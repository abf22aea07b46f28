"""What every record of a run folder shares: the schema version and a strict, frozen pydantic base."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1
"""Version of the trajectory, label and manifest layout; bump it when a field changes meaning."""


class Record(BaseModel):
    """A line or file a run writes: unknown fields are refused and nothing changes once made."""

    model_config = ConfigDict(extra="forbid", frozen=True)
