"""``cai generate``: constitution + prompts -> trajectories -> preference dataset.

Order of work: everything cheap is checked first (constitution, prompts, the
output folder), then the models load, then prompts not yet in the folder go
through the loop chunk by chunk, each finished chunk appended to
``trajectories.jsonl`` at once and then labelled by the AI-feedback judge into
``labels.jsonl`` (:mod:`engine.judge.store`). A resumed run first labels rows that
were written but not yet labelled. Through a server (``openai:``) rows are pipelined
instead (:mod:`engine.pipeline`): each is written as it finishes, and labelled a chunk
at a time. The dataset, card and constitution copy are (re)built from all rows at the
end. :func:`label` (``cai label``) judges an existing run again without regenerating.

Memory stays flat in the number of prompts: the prompt file is checked through
once up front (keeping nothing), then read again a chunk at a time; rows go to
disk as they finish and the dataset is built from the file.

With ``shard="I/N"`` a run takes only the prompts of that shard
(:class:`~engine.records.Shard`: by a hash of the prompt id, after ``limit``);
the shard is part of the run's manifest, so a folder holds one shard, and
``cai merge`` (:mod:`engine.merge`) combines the N shards' folders.

With ``best_of`` > 1 each first answer is the best of that many samples by the
preference model ``reward_model`` (:mod:`engine.critique`), loaded once, with
the run's batch size, dtype and device, and only when prompts are left to do.
Both are part of the manifest, so a resume with other values is refused
unless ``--force``, as for any other setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import constitution as constitution_lib
from constitution import Constitution
from engine.audit.comparisons import LabelledComparison
from engine.audit.gate import check_items, gate
from engine.backends import load_backend
from engine.backends.base import Backend, SamplingParams
from engine.backends.prefix import TokenMeter
from engine.backends.reward_model import Scorer, load_reward_model
from engine.config import GenerateConfig, check_best_of, judge_settings
from engine.critique import LoopSettings, run_loop
from engine.dataset.of_run import build_dataset
from engine.errors import USAGE, UserError
from engine.judge import LABEL_MANIFEST, LABELS, LabelStats, LabelStore, judge_trajectories, label_rows
from engine.judge.panel import PairJudge, make_judge
from engine.pipeline import each_written, generation_path, run_pipelined
from engine.progress import chunked, progress_bar
from engine.records import (
    ConstitutionRef,
    JudgeCheck,
    JudgeSettings,
    LabelManifest,
    PromptTokenCount,
    RunManifest,
    Shard,
    prompt_digest,
)
from engine.run_constitution import (
    CONSTITUTION_COPY,
    CONSTITUTIONS,
    constitution_file,
    keep_replaced_constitution,
    write_constitution,
)
from engine.rundir import RunDir, RunDirError, run_lock
from engine.sources import PromptStream, open_prompts

BackendFactory = Callable[..., Backend]
RewardFactory = Callable[..., Scorer]
"""Loads an ``rm:PATH`` spec (with ``batch_size``, ``dtype``, ``device``) into a preference model."""


@dataclass(frozen=True)
class Summary:
    """What a run did, for the closing message."""

    out: Path
    dataset: Path
    prompts: int
    skipped: int
    generated: int
    rows: int
    revised: int
    pairs: int
    seconds: float
    labels: LabelStats | None = None
    """Label quality of the whole run, when the judge labelled it."""
    shard: str | None = None
    """The shard (I/N) of the prompts the run holds; ``prompts`` counts that shard's prompts."""
    check: JudgeCheck | None = None
    """The judge's check on labelled comparisons (None: not checked)."""
    prompt_tokens: PromptTokenCount | None = None
    """Prompt tokens this run's local models were asked for and computed (None: none counted)."""


@dataclass(frozen=True)
class LabelSummary:
    """What ``cai label`` did."""

    out: Path
    dataset: Path
    labelled: int
    pairs: int
    stats: LabelStats
    seconds: float
    check: JudgeCheck | None = None
    """The judge's check on labelled comparisons (None: not checked)."""


def generate(
    config: GenerateConfig,
    *,
    progress: bool = True,
    backends: BackendFactory = load_backend,
    say: Callable[[str], None] | None = None,
    rewards: RewardFactory = load_reward_model,
) -> Summary:
    """Run (or resume) a generation run, labelling each finished chunk with the judge (unless ``config.judge`` is off).

    The run folder is locked for the whole run (:func:`~engine.rundir.run_lock`):
    a second ``cai generate`` or ``cai label`` on it is refused.

    Args:
        config: The run's settings.
        progress: Show progress bars.
        backends: Loads a model spec into a backend.
        say: Called with each note about what ``--force`` replaced, before any work.
        rewards: Loads ``config.reward_model`` (best-of-n) into a preference model.

    Raises:
        constitution.ConstitutionError, PromptSetError, RunDirError, BackendError, ConfigError:
            Bad input; the message says what to fix. Nothing written is lost.
    """
    start = time.perf_counter()
    check_best_of(config)
    rules = constitution_lib.load(config.constitution)
    prompts = open_prompts(config.prompts, limit=config.limit, seed=config.seed)  # bad input fails here, up front
    shard = Shard.parse(config.shard) if config.shard is not None else None
    wants_check = config.judge and config.judge_check != "none"
    check_set = check_items(config.judge_check, config.judge_check_limit) if wants_check else None
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)
    reference = ConstitutionRef.of(rules)
    manifest = RunManifest(
        constitution=reference,
        policy=config.model,
        critic=config.critic_model or config.model,
        revisions=config.revisions,
        stop_early=config.stop_early,
        sampling=sampling,
        seed=config.seed,
        prompts=config.prompts,
        shard=config.shard,
        best_of=config.best_of,
        reward_model=config.reward_model,
    )
    with run_lock(config.out, "cai generate"):
        return _generate(
            config,
            rules,
            prompts,
            shard,
            manifest,
            check_set,
            start,
            progress,
            backends,
            rewards,
            say or (lambda _: None),
        )


def _generate(
    config: GenerateConfig,
    rules: Constitution,
    prompts: PromptStream,
    shard: Shard | None,
    manifest: RunManifest,
    check_set: list[LabelledComparison] | None,
    start: float,
    progress: bool,
    backends: BackendFactory,
    rewards: RewardFactory,
    say: Callable[[str], None],
) -> Summary:
    run = RunDir.open(config.out, manifest, force=config.force)
    reference = manifest.constitution
    labels = None
    if config.judge:
        label_manifest = labelled_by(config.judges, judge_settings(config), reference)
        labels = LabelStore.open(config.out, label_manifest, force=config.force)
    else:
        _check_no_judge(config.out, config.force)
    made = run.prompt_digests()  # also cuts a torn last line off
    done = set(made)
    _check_prompts_unchanged(run, prompts, made, shard)
    for note in _force_notes(run, labels, config, done):
        say(note)
    if shard is None:
        selected = len(prompts)
        skipped = sum(1 for prompt_id in prompts.ids() if prompt_id in done) if done else 0
    else:
        selected = skipped = 0
        for prompt_id in prompts.ids():
            if shard.holds(prompt_id):
                selected += 1
                skipped += prompt_id in done
    todo = selected - skipped
    labelled = _labelled_ids(labels, done)
    unlabelled = len(done - labelled) if labels is not None else 0

    generated = 0
    options = {"batch_size": config.batch_size, "dtype": config.dtype, "device": config.device}
    loaded: dict[str, Backend] = {}
    meter = TokenMeter()

    def backend(spec: str) -> Backend:
        if spec not in loaded:
            loaded[spec] = meter.watch(backends(spec, **options))
        return loaded[spec]

    scorers: dict[str, Scorer] = {}

    def scorer(spec: str) -> Scorer:  # one copy of a preference model that both picks answers and judges
        if spec not in scorers:
            scorers[spec] = rewards(spec, **options)
        return scorers[spec]

    reward: Scorer | None = None
    if todo:
        policy, critic = backend(config.model), backend(manifest.critic)
        generation = generation_path(config.pipeline, policy, critic, config.best_of)
        run.manifest = run.manifest.model_copy(update={"generation": generation})  # run.json says which path ran
        if config.reward_model is not None and config.best_of > 1:
            reward = scorer(config.reward_model)
    judge: PairJudge | None = None
    if labels is not None and (todo or unlabelled):
        judge = make_judge(judges_of(labels.manifest), backend, labels.manifest.settings, rules, rewards=scorer)
    check = None
    if judge is not None and labels is not None and check_set is not None:
        # before anything is written: a judge the gate refuses leaves the folder as it was
        check = gate(labels, judge, rules, config.judge_check, check_set, config.require_judge_accuracy, say)
    keep_replaced_constitution(run)
    run.begin()  # after the models load: a model that fails to load leaves no manifest behind
    write_constitution(config.out, rules)  # the rules the new rows are made under
    if labels is not None:
        labels.begin()
    if judge is not None and labels is not None and unlabelled:
        _label_existing(run, labels, judge, rules, config.chunk_size, labelled, unlabelled, progress)
    if todo:
        settings = LoopSettings(
            revisions=config.revisions,
            stop_early=config.stop_early,
            seed=config.seed,
            sampling=manifest.sampling,
            best_of=config.best_of,
        )
        bar = progress_bar(todo, progress, "generate")
        try:
            wanted = (item for item in prompts if item.id not in done and (shard is None or shard.holds(item.id)))
            if generation == "pipelined":  # rows written as they finish, labelled a chunk of finished rows at a time
                finished = run_pipelined(wanted, rules, policy, critic, settings, in_flight=config.batch_size)
                chunks = chunked(each_written(finished, run.append, bar.update if bar else None), config.chunk_size)
            else:
                chunks = (
                    run_loop(c, rules, policy, critic, settings, reward) for c in chunked(wanted, config.chunk_size)
                )
            for rows in chunks:
                if generation == "batched":
                    run.append(rows)
                if judge is not None and labels is not None:
                    labels.append(judge_trajectories(judge, rows, rules))
                generated += len(rows)
                if bar is not None and generation == "batched":
                    bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()

    if (used := meter.used()) is not None and used.requested:
        run.count_prompt_tokens(used)
    path, sizes, stats, label_stats = build_dataset(run, labels)
    if config.push_to_hub:
        from datasets import load_from_disk

        load_from_disk(str(path)).push_to_hub(config.push_to_hub)
    return Summary(
        out=config.out,
        dataset=path,
        prompts=selected,
        skipped=skipped,
        generated=generated,
        rows=stats.rows,
        revised=stats.revised,
        pairs=sizes["preferences"],
        seconds=time.perf_counter() - start,
        labels=label_stats,
        shard=config.shard,
        check=check,
        prompt_tokens=used,
    )


def _check_no_judge(out: Path, force: bool) -> None:
    """``--no-judge`` on a judged run would swap the judge's labels for the old rule: only with ``--force``."""
    labels = LabelStore.of_run(out)
    if labels is not None and not force:
        raise RunDirError(
            f"{out} is labelled by the judge ({labels.manifest.judge}); --no-judge would build its dataset "
            "without those labels (final revision assumed better). Drop --no-judge to keep them, or pass "
            "--force to build without them (labels.jsonl is kept, and a run without --no-judge uses it again)."
        )


def _check_prompts_unchanged(run: RunDir, prompts: PromptStream, made: dict[str, str], shard: Shard | None) -> None:
    """Refuse a resume whose prompt file now says something else under the id of a row already made.

    ``made`` is :meth:`RunDir.prompt_digests`.
    """
    if not made:
        return
    changed = [
        item.id
        for item in prompts
        if item.id in made and (shard is None or shard.holds(item.id)) and made[item.id] != prompt_digest(item.messages)
    ]
    if changed:
        shown = ", ".join(repr(i) for i in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise RunDirError(
            f"{prompts.source}: {len(changed)} prompt{'s' * (len(changed) != 1)} changed since {run.path} made "
            f"{'their rows' if len(changed) != 1 else 'its row'} ({shown}); resuming would keep the old rows in "
            "the dataset. Give each edited prompt a new id, restore the old text, or use another --out."
        )


def _force_notes(run: RunDir, labels: LabelStore | None, config: GenerateConfig, done: set[str]) -> list[str]:
    """What ``--force`` replaces, said before anything is written."""
    notes = []
    if run.replaced:
        kept = f"; the {len(done)} rows made under the old settings stay, each recording its own" if done else ""
        notes.append(f"--force: {config.out} goes on under new settings ({'; '.join(run.replaced)}){kept}")
        if run.before is not None and run.before.constitution != run.manifest.constitution:
            old = run.before.constitution
            notes.append(
                f"--force: the old rules ({old.id} {old.hash[:12]}) stay in "
                f"{config.out / CONSTITUTIONS / constitution_file(old)}; the card counts rows per constitution"
            )
    relabel = _relabel_note(labels) if labels is not None else None
    if relabel:
        notes.append(relabel)
    if not config.judge and config.force and (config.out / LABEL_MANIFEST).exists():
        notes.append(f"--force: the dataset is built without the judge's labels ({config.out / LABELS} is kept)")
    return notes


def _relabel_note(labels: LabelStore) -> str | None:
    """What judging under ``labels.manifest`` replaces (only ``--force`` gets this far when anything differs)."""
    before = labels.existing()
    diffs = before.differences(labels.manifest) if before is not None else []
    if not diffs:
        return None
    return f"--force: the pairs are judged again ({'; '.join(diffs)}); the old labels are moved to labels.N.jsonl"


def label(
    out: Path,
    settings: JudgeSettings,
    *,
    judge_model: str | Sequence[str] = (),
    constitution: str | None = None,
    batch_size: int = 16,
    chunk_size: int = 64,
    dtype: str = "auto",
    device: str = "auto",
    force: bool = False,
    judge_check: str = "builtin",
    judge_check_limit: int | None = None,
    require_judge_accuracy: float | None = None,
    progress: bool = True,
    backends: BackendFactory = load_backend,
    rewards: RewardFactory = load_reward_model,
    say: Callable[[str], None] | None = None,
) -> LabelSummary:
    """Label (or finish labelling) the trajectories of an existing run with a judge, and rebuild its dataset.

    Args:
        out: The run folder.
        settings: How to judge.
        judge_model: The judge (default: the run's policy model); several: a panel.
        constitution: Principles to judge under (default: the run's own copy, ``constitution.yaml``).
        force: Judge again with settings other than those of the labels in the folder (they are kept beside).
        judge_check: Check the judge first on labelled comparisons: ``builtin``, a JSONL file, or ``none``.
        judge_check_limit: Comparisons the check uses (default: 16 of the builtin set, all of a file).
        require_judge_accuracy: Refuse to label when the check's accuracy is below this.
        backends: Loads a language model's spec into a backend.
        rewards: Loads an ``rm:`` judge's preference model (with the batch size, dtype and device above).
        say: Called with a note about what ``force`` replaces, and with the judge check's result.

    Raises:
        RunDirError, ConstitutionError, BackendError: Bad input; the message says what to fix.
    """
    start = time.perf_counter()
    manifest = RunDir.read_manifest(out)
    own = out / CONSTITUTION_COPY
    if constitution is None and not own.exists():
        raise RunDirError(f"{own}: missing; pass --constitution with the rules to judge under")
    rules = constitution_lib.load(constitution if constitution is not None else str(own))
    if require_judge_accuracy is not None and judge_check == "none":
        raise UserError("--require-judge-accuracy needs a judge check; drop --judge-check none", exit_code=USAGE)
    check_set = check_items(judge_check, judge_check_limit) if judge_check != "none" else None
    reference = ConstitutionRef.of(rules)
    specs = [judge_model] if isinstance(judge_model, str) else list(judge_model)
    label_manifest = labelled_by(specs or [manifest.policy], settings, reference)
    run = RunDir(out, manifest)
    with run_lock(out, "cai label"):
        labels = LabelStore.open(out, label_manifest, force=force)
        relabel = _relabel_note(labels)
        if relabel and say is not None:
            say(relabel)
        done = run.done_ids()
        labelled = _labelled_ids(labels, done)
        pending = len(done - labelled)
        judge = None
        if pending:

            def backend(spec: str) -> Backend:
                return backends(spec, batch_size=batch_size, dtype=dtype, device=device)

            def scorer(spec: str) -> Scorer:
                scorer_: Scorer = rewards(spec, batch_size=batch_size, dtype=dtype, device=device)
                return scorer_

            judge = make_judge(judges_of(label_manifest), backend, settings, rules, rewards=scorer)
        check = None
        if judge is not None and check_set is not None:
            check = gate(labels, judge, rules, judge_check, check_set, require_judge_accuracy, say or (lambda _: None))
        labels.begin()
        if judge is not None:
            _label_existing(run, labels, judge, rules, chunk_size, labelled, pending, progress)
        path, sizes, _, label_stats = build_dataset(run, labels)
    assert label_stats is not None
    return LabelSummary(
        out=out,
        dataset=path,
        labelled=pending,
        pairs=sizes["preferences"],
        stats=label_stats,
        seconds=time.perf_counter() - start,
        check=check,
    )


def labelled_by(judges: Sequence[str], settings: JudgeSettings, constitution: ConstitutionRef) -> LabelManifest:
    """The label manifest of these judge models (a panel when there are several)."""
    return LabelManifest(
        judge=judges[0], panel=list(judges) if len(judges) > 1 else [], settings=settings, constitution=constitution
    )


def judges_of(manifest: LabelManifest) -> list[str]:
    """The judge models a label manifest names."""
    return manifest.panel or [manifest.judge]


def _labelled_ids(labels: LabelStore | None, rows: set[str]) -> set[str]:
    """Rows labelled under the store's manifest (none when the folder's labels are from another judge).

    Labels of rows the run no longer holds (``rows`` are the ids it holds) are
    removed first: such a row was cut off by a crash and is made and judged again.
    """
    if labels is None:
        return set()
    before = labels.existing()
    if before is None or before.differences(labels.manifest):
        return set()
    labels.drop_orphans(rows)
    return labels.done_ids()


def _label_existing(
    run: RunDir,
    labels: LabelStore,
    judge: PairJudge,
    rules: Constitution,
    chunk_size: int,
    labelled: set[str],
    total: int,
    progress: bool,
) -> None:
    bar = progress_bar(total, progress, "label")
    try:
        update = bar.update if bar is not None else None
        label_rows(labels, run.rows(), judge, rules, labelled=labelled, chunk_size=chunk_size, on_chunk=update)
    finally:
        if bar is not None:
            bar.close()
