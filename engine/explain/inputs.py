"""What ``cai explain`` and the review page explain: a run's pair, a labelled comparison, or two given texts.

Each resolves to an :class:`Explainable`: the :class:`~engine.judge.pairwise.Pair` to judge (first response
first: a run's chosen one, a comparison's ``response_a``), the names of its two responses, and the principles
it was judged under. :func:`run_judge` makes the judge a run was labelled with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import constitution as constitution_lib
from constitution import Constitution, Principle
from constitution.errors import did_you_mean
from engine.audit.comparisons import LabelledComparison, load_comparisons
from engine.backends.base import Backend, Chat
from engine.backends.reward_model import Scorer, load_reward_model
from engine.explain.errors import ExplainError
from engine.judge.pairwise import Pair
from engine.judge.panel import PairJudge, make_judge
from engine.judge.principles import sample_principles
from engine.judge.store import LabelStore
from engine.records.labels import JudgeSettings, Label
from engine.records.trajectory import Trajectory
from engine.run_constitution import CONSTITUTION_COPY
from engine.rundir import TRAJECTORIES, JsonlLog, RunDir

SHOWN = 60
"""Characters of an id quoted back in an error."""


@dataclass(frozen=True)
class Explainable:
    """A pair to explain, with what to call its responses and a note on where it came from."""

    pair: Pair
    names: tuple[str, str]
    note: str = ""


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN else value[:SHOWN] + "…")


def pick_principles(
    rules: Constitution, wanted: str | None, judged: Sequence[str], settings: JudgeSettings, key: str
) -> tuple[Principle, ...]:
    """``--principle`` when given, else the principles the pair was judged under, else ``settings.principles``
    sampled for ``key`` (a preference model reads none, but a language model needs one).

    Raises:
        ExplainError: ``wanted`` is not a principle of ``rules``.
    """
    known = {p.id: p for p in rules.principles}
    if wanted is not None:
        if wanted not in known:
            raise ExplainError(
                f"--principle: {wanted!r} is not in constitution {rules.id!r}{did_you_mean(wanted, known)}"
            )
        return (known[wanted],)
    found = tuple(known[p] for p in judged if p in known)
    return found or sample_principles(rules, settings.principles, settings.seed, key)


# ------------------------------------------------------------------ a run's pair


@dataclass(frozen=True)
class RunPair:
    """A run's pair as ``cai review`` shows it: the judge's chosen and rejected responses, or without a label
    the last revision that changed the answer over the first answer."""

    trajectory: Trajectory
    label: Label | None
    chosen_from: str
    rejected_from: str

    @property
    def texts(self) -> tuple[str, str]:
        """The chosen and rejected texts."""
        texts = self.trajectory.texts()
        return texts[self.chosen_from], texts[self.rejected_from]


def run_pair(run_dir: Path, pair_id: str) -> RunPair:
    """The pair of row ``pair_id`` of a run.

    Raises:
        RunDirError: ``run_dir`` holds no run this version of cai can read.
        ExplainError: No such row, or a row without two different responses.
    """
    RunDir.read_manifest(run_dir)
    trajectory = next(
        (t for t in JsonlLog(run_dir / TRAJECTORIES, Trajectory, "trajectory").rows() if t.id == pair_id), None
    )
    if trajectory is None:
        raise ExplainError(
            f"{run_dir}: no row {_shown(pair_id)}; the ids are in {run_dir / TRAJECTORIES} (field `id`) "
            f"and in the list of `cai review {run_dir}`"
        )
    store = LabelStore.of_run(run_dir)
    label = None
    if store is not None:
        for found in store.rows():
            if found.id == pair_id:
                label = found  # the last one written counts
    if label is not None and label.labelled and label.chosen_from and label.rejected_from:
        return RunPair(trajectory, label, label.chosen_from, label.rejected_from)
    for number in range(len(trajectory.rounds), 0, -1):
        step = trajectory.rounds[number - 1]
        if step.changed and step.revision is not None:
            return RunPair(trajectory, label, f"revision_{number}", "initial")
    why = f"the judge found {label.status}" if label is not None else "the run is not judged"
    raise ExplainError(
        f"{run_dir}: row {_shown(pair_id)} has no pair to explain: {why} and no revision changed the first "
        "answer; pick a row that `cai review` lists"
    )


def explainable_run_pair(
    found: RunPair, rules: Constitution, settings: JudgeSettings, principle: str | None
) -> Explainable:
    """The pair of :func:`run_pair`, chosen response first, under the principles its label names."""
    chosen, rejected = found.texts
    judged = found.label.principles if found.label is not None else []
    principles = pick_principles(rules, principle, judged, settings, found.trajectory.id)
    pair = Pair(found.trajectory.prompt, chosen, rejected, principles)
    note = "" if found.label is not None and found.label.labelled else "not labelled by the judge: "
    names = (f"chosen ({found.chosen_from})", f"rejected ({found.rejected_from})")
    if note:
        note += f"the pair is {found.chosen_from} over {found.rejected_from}, as `cai review` shows it"
    return Explainable(pair, names, note)


def run_constitution(run_dir: Path, given: str | None) -> Constitution:
    """The rules to judge a run's pair under: ``given``, else the run's own copy, else the default.

    Raises:
        ConstitutionError: The rules cannot be loaded.
    """
    own = run_dir / CONSTITUTION_COPY
    return constitution_lib.load(given if given is not None else (str(own) if own.exists() else "default"))


def run_judge(
    run_dir: Path,
    specs: Sequence[str],
    rules: Constitution,
    backends: Callable[[str], Backend],
    *,
    seed: int = 0,
    rewards: Callable[[str], Scorer] = load_reward_model,
) -> PairJudge:
    """The judge of a run: ``specs`` when given, else the judge (or panel) and settings its labels were made
    with, else its policy model with the default settings.

    Raises:
        RunDirError: The run's manifests cannot be read.
        BackendError: A model cannot be loaded.
    """
    manifest = RunDir.read_manifest(run_dir)
    store = LabelStore.of_run(run_dir)
    labelled = store.manifest if store is not None else None
    settings = labelled.settings if labelled is not None else JudgeSettings(seed=seed)
    if not specs:
        specs = (labelled.panel or [labelled.judge]) if labelled is not None else [manifest.policy]
    return make_judge(specs, backends, settings, rules, rewards=rewards)


# ------------------------------------------------------------------ a labelled comparison, two given texts


def comparison_item(file: str, item_id: str) -> LabelledComparison:
    """Item ``item_id`` of a labelled-comparisons file (``builtin``: the shipped set).

    Raises:
        JudgeDataError: The file cannot be read.
        ExplainError: No item has that id.
    """
    items = load_comparisons(file)
    found = next((c for c in items if c.id == item_id), None)
    if found is None:
        some = ", ".join(c.id for c in items[:3])
        raise ExplainError(f"{file}: no item {_shown(item_id)} (ids there look like {some}); give one of its ids")
    return found


def explainable_item(
    item: LabelledComparison, rules: Constitution, settings: JudgeSettings, principle: str | None
) -> Explainable:
    """A labelled comparison, ``response_a`` first, under its own principle, ``--principle``, or sampled."""
    principles = pick_principles(rules, principle, [item.principle] if item.principle else [], settings, item.id)
    pair = Pair(item.conversation, item.response_a, item.response_b, principles)
    return Explainable(pair, ("response A", "response B"), f"people found response {item.better} better")


def explainable_texts(
    prompt: str, first: str, second: str, rules: Constitution, settings: JudgeSettings, principle: str | None
) -> Explainable:
    """Two responses given as text to one user prompt."""
    conversation: Chat = [{"role": "user", "content": prompt}]
    principles = pick_principles(rules, principle, [], settings, prompt)
    return Explainable(Pair(conversation, first, second, principles), ("first", "second"))
