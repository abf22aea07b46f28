"""``cai generate``: constitution + prompts -> trajectories -> preference dataset.

Order of work: everything cheap is checked first (constitution, prompts, the
output folder), then the models load, then prompts not yet in the folder go
through the loop chunk by chunk, each finished chunk appended to
``trajectories.jsonl`` at once. The dataset, card and constitution copy are
(re)built from all rows at the end.

Memory stays flat in the number of prompts: the prompt file is checked through
once up front (keeping nothing), then read again a chunk at a time; rows go to
disk as they finish and the dataset is built from the file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import constitution as constitution_lib
from engine.backends import Backend, SamplingParams, load_backend
from engine.config import GenerateConfig
from engine.critique import LoopSettings, run_loop
from engine.dataset import save_dataset, write_card
from engine.prompt_sets import PromptItem, open_prompts
from engine.records import ConstitutionRef, RunManifest
from engine.rundir import RunDir

if TYPE_CHECKING:
    from tqdm import tqdm

BackendFactory = Callable[..., Backend]


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


def generate(config: GenerateConfig, *, progress: bool = True, backends: BackendFactory = load_backend) -> Summary:
    """Run (or resume) a generation run.

    Raises:
        constitution.ConstitutionError, PromptSetError, RunDirError, BackendError:
            Bad input; the message says what to fix. Nothing written is lost.
    """
    start = time.perf_counter()
    rules = constitution_lib.load(config.constitution)
    prompts = open_prompts(config.prompts, limit=config.limit)  # checks every row now: bad input fails here
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)
    manifest = RunManifest(
        constitution=ConstitutionRef(id=rules.id, version=rules.version, hash=rules.content_hash),
        policy=config.model,
        critic=config.critic_model or config.model,
        revisions=config.revisions,
        stop_early=config.stop_early,
        sampling=sampling,
        seed=config.seed,
        prompts=config.prompts,
    )
    run = RunDir.open(config.out, manifest, force=config.force)
    done = run.done_ids()
    skipped = sum(1 for prompt_id in prompts.ids() if prompt_id in done) if done else 0
    todo = len(prompts) - skipped

    generated = 0
    if todo:
        options = {"batch_size": config.batch_size, "dtype": config.dtype, "device": config.device}
        policy = backends(config.model, **options)
        critic = policy if manifest.critic == config.model else backends(manifest.critic, **options)
    run.begin()  # after the models load: a model that fails to load leaves no manifest behind
    if todo:
        settings = LoopSettings(
            revisions=config.revisions, stop_early=config.stop_early, seed=config.seed, sampling=sampling
        )
        bar = _progress(todo, progress)
        try:
            for chunk in _chunks((item for item in prompts if item.id not in done), config.chunk_size):
                run.append(run_loop(chunk, rules, policy, critic, settings))
                generated += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    path, sizes, stats = save_dataset(run.rows(), config.out)
    (config.out / "constitution.yaml").write_text(constitution_lib.dump(rules), encoding="utf-8")
    write_card(config.out, manifest, stats, sizes)
    if config.push_to_hub:
        from datasets import load_from_disk

        load_from_disk(str(path)).push_to_hub(config.push_to_hub)
    return Summary(
        out=config.out,
        dataset=path,
        prompts=len(prompts),
        skipped=skipped,
        generated=generated,
        rows=stats.rows,
        revised=stats.revised,
        pairs=sizes["preferences"],
        seconds=time.perf_counter() - start,
    )


def _chunks(items: Iterable[PromptItem], size: int) -> Iterator[list[PromptItem]]:
    """Consecutive lists of ``size`` items (the last may be shorter), taken as they are needed."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _progress(total: int, enabled: bool) -> tqdm[None] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="row", desc="generate", dynamic_ncols=True, smoothing=0.1)
