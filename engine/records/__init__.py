"""What run folders hold, as one set of types: everything that reads or writes a run uses these.

- ``run.json``: :class:`RunManifest` (settings a resume must match, shards, merges) — :mod:`.run`;
- ``trajectories.jsonl``: one :class:`Trajectory` per prompt, with its candidates (and, with best-of-n,
  its :class:`BestOf` samples) — :mod:`.trajectory`;
- ``labels.json`` / ``labels.jsonl``: :class:`LabelManifest` and one :class:`Label` per row, each
  holding the judge's :class:`Comparison` records and their per-order :class:`Judgment` — :mod:`.labels`;
- ``reviews.jsonl``: the people's :class:`Decision` per pair — :mod:`.decisions`.

The label sources (``label_source`` of a dataset pair) are :data:`AI_JUDGE`,
:data:`PREFERENCE_MODEL`, :data:`REVISION_ASSUMED_BETTER` and :data:`HUMAN`.
"""

from engine.records.base import SCHEMA_VERSION, Record
from engine.records.decisions import REVIEWS, Decision, ReviewError, load_decisions, read_decisions, texts_hash
from engine.records.labels import (
    AI_JUDGE,
    DROPPED,
    HUMAN,
    PREFERENCE_MODEL,
    REVISION_ASSUMED_BETTER,
    TIE,
    Comparison,
    JudgeCheck,
    JudgeSettings,
    Judgment,
    Label,
    LabelManifest,
    LabelSource,
    Pairing,
    Status,
    Verdict,
)
from engine.records.run import MergedRun, PromptTokenCount, RunManifest, Shard, missing_shards
from engine.records.trajectory import BestOf, ConstitutionRef, Round, Sample, Trajectory, prompt_digest

__all__ = [
    "AI_JUDGE",
    "DROPPED",
    "HUMAN",
    "PREFERENCE_MODEL",
    "REVIEWS",
    "REVISION_ASSUMED_BETTER",
    "SCHEMA_VERSION",
    "TIE",
    "BestOf",
    "Comparison",
    "ConstitutionRef",
    "Decision",
    "JudgeCheck",
    "JudgeSettings",
    "Judgment",
    "Label",
    "LabelManifest",
    "LabelSource",
    "MergedRun",
    "Pairing",
    "PromptTokenCount",
    "Record",
    "ReviewError",
    "Round",
    "RunManifest",
    "Sample",
    "Shard",
    "Status",
    "Trajectory",
    "Verdict",
    "load_decisions",
    "missing_shards",
    "prompt_digest",
    "read_decisions",
    "texts_hash",
]
