"""The copies of the rules a run folder keeps: ``constitution.yaml`` and, once there are several, ``constitutions/``.

``constitution.yaml`` is the constitution new rows are made under (``cai
label`` judges under it by default). When ``--force`` makes rows under other
rules, the earlier copy is kept in ``constitutions/`` (named by id and hash)
so every row's ``constitution`` hash still has its text beside it.
"""

from __future__ import annotations

from pathlib import Path

import constitution as constitution_lib
from constitution import Constitution
from engine.records import ConstitutionRef
from engine.rundir import RunDir, atomic_write

CONSTITUTION_COPY = "constitution.yaml"
"""The copy of the rules a run's new rows are made under."""
CONSTITUTIONS = "constitutions"
"""Folder of a run that keeps the copy of every constitution its rows were made under, once there is more than one."""


def constitution_file(reference: ConstitutionRef) -> str:
    """Name of the copy of a constitution kept in a run's ``constitutions/`` folder."""
    return f"{reference.id}-{reference.hash[:12]}.yaml"


def keep_replaced_constitution(run: RunDir) -> None:
    """Before ``--force`` overwrites ``constitution.yaml`` with other rules, keep the old copy beside."""
    before = run.before
    own = run.path / CONSTITUTION_COPY
    if before is None or before.constitution == run.manifest.constitution or not own.exists():
        return
    kept = run.path / CONSTITUTIONS / constitution_file(before.constitution)
    if not kept.exists():
        kept.parent.mkdir(exist_ok=True)
        atomic_write(kept, own.read_text(encoding="utf-8"))


def write_constitution(out: Path, rules: Constitution) -> None:
    """Write the copy of the rules new rows are made under (and, in a folder with history, keep it beside)."""
    text = constitution_lib.dump(rules)
    atomic_write(out / CONSTITUTION_COPY, text)
    if (out / CONSTITUTIONS).is_dir():
        reference = ConstitutionRef.of(rules)
        atomic_write(out / CONSTITUTIONS / constitution_file(reference), text)


__all__ = [
    "CONSTITUTIONS",
    "CONSTITUTION_COPY",
    "constitution_file",
    "keep_replaced_constitution",
    "write_constitution",
]
