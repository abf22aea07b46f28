"""The commands that make and reshape a run's data: ``cai generate``, ``label``, ``merge`` and ``export``.

``generate`` runs the critique-and-revision loop and the judge over a prompt
set (:mod:`engine.generate`), ``label`` judges an existing run again, ``merge``
combines the shards of a run (:mod:`engine.merge`), ``export`` writes a run's
dataset as JSONL or Parquet (:mod:`engine.dataset`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.options import (
    FOLDER,
    backend_loader,
    base_url_option,
    batch_size_option,
    best_of_options,
    check_shard,
    chunk_size_option,
    constitution_option,
    device_option,
    dtype_option,
    judge_check_options,
    judge_model_option,
    out_option,
    pair_judge_options,
    run_config_option,
    seed_option,
)

if TYPE_CHECKING:
    from engine.records import JudgeCheck


@click.command()
@out_option("Output folder (required).")
@click.option(
    "--model",
    default="default",
    show_default=True,
    help="Policy model: default (the embedded SmolLM2-135M), a folder, a hub id, openai:NAME, vllm:NAME, "
    "or scripted (a deterministic fake, no model: try the pipeline or test in seconds).",
)
@base_url_option
@click.option("--critic-model", help="Critic model (default: the policy).")
@constitution_option()
@click.option(
    "-p", "--prompts", default="redteam", show_default=True, help="redteam, helpful, mixed, a file, or hf:NAME."
)
@click.option("--revisions", type=int, default=2, show_default=True, help="Critique-and-revision rounds.")
@click.option(
    "--stop-early/--no-stop-early",
    default=True,
    show_default=True,
    help="Stop a row when its critique finds nothing to change.",
)
@click.option(
    "--limit", type=int, help="Use only N prompts: a sample seeded by --seed, spread over kinds and harm categories."
)
@click.option(
    "--shard",
    metavar="I/N",
    callback=check_shard,
    help="Only shard I of N of the prompts (by a hash of each id, after --limit); combine with `cai merge`.",
)
@seed_option("Seed for principle sampling and sampling.")
@batch_size_option()
@chunk_size_option("Most prompts in flight at once (pipelined: rows labelled together).")
@click.option(
    "--pipeline",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Pipeline rows through a server: each row's next request goes out as soon as its last is back, "
    "--batch-size in flight at all times (auto: for openai: models); off: step by step.",
)
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Most tokens per reply.")
@click.option("--temperature", type=float, default=0.7, show_default=True, help="0 for greedy decoding.")
@click.option("--top-p", type=float, default=0.95, show_default=True, help="Nucleus sampling mass.")
@best_of_options
@dtype_option
@device_option
@click.option(
    "--judge/--no-judge",
    default=True,
    show_default=True,
    help="Label pairs with the AI-feedback judge; --no-judge assumes the final revision is better.",
)
@judge_model_option(
    "Judge model (default: the policy), or rm:PATH (a preference model); give it again for each judge of a panel.",
    multiple=True,
)
@pair_judge_options
@judge_check_options
@click.option("--force", is_flag=True, help="Add rows to a folder that holds a run with other settings.")
@click.option("--push-to-hub", metavar="REPO", help="Also push the dataset to the Hugging Face hub.")
@run_config_option
@click.pass_context
def generate(ctx: click.Context, /, config_file: Path | None, **_: object) -> None:
    """Turn a constitution and prompts into critique/revision trajectories and a preference dataset.

    Each prompt gets an answer from the policy model, then --revisions rounds of
    critique and revision, each under a principle sampled by weight. The judge
    then compares the answer and its revisions under sampled principles (both
    orders, so position bias cancels) and picks chosen and rejected with a soft
    label. Rows stream to OUT/trajectories.jsonl and OUT/labels.jsonl as they
    finish; rerunning the same command on the same --out resumes where it
    stopped. At the end OUT/dataset holds a Hugging Face DatasetDict with a
    `preferences` split (TRL's conversational format) and an `sft` split,
    described by OUT/README.md with a label-quality report.

    With --best-of N the first answer is the best of N samples, scored by a
    preference model trained with `cai train rm` (--reward-model rm:PATH);
    each row keeps all N samples with their rewards.

    \b
    Examples:
        cai generate --out runs/demo --limit 8 --revisions 1 --max-new-tokens 48
        cai generate --config run.yaml --seed 3
        cai generate --out runs/bo4 --best-of 4 --reward-model rm:models/rm --limit 8
        cai generate --model ./my-model --prompts prompts.jsonl -c my_rules.yaml -o runs/x
        cai generate --shard 2/4 --model openai:NAME --base-url http://host:8000/v1 -o runs/shard-2
    """
    from click.core import ParameterSource

    from engine.cli.output import Interrupted, note
    from engine.config import load_config
    from engine.generate import generate as run_generate

    overrides = {
        name: value
        for name, value in ctx.params.items()
        if name != "config_file" and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    try:
        config = load_config(config_file, overrides)
        summary = run_generate(config, backends=backend_loader(config.base_url), say=note)
    except KeyboardInterrupt:
        raise Interrupted("\ninterrupted: finished rows are saved; run the same command again to resume") from None
    click.echo(
        f"\n{summary.rows} rows in {summary.out} ({summary.generated} new, {summary.skipped} already there), "
        f"{summary.revised} answers changed by revision, {summary.pairs} preference pairs, {summary.seconds:.0f} s"
    )
    if summary.prompt_tokens is not None:
        click.echo(summary.prompt_tokens.render() + "; a prefix that prompts of one model call share runs once")
    if summary.labels is not None:
        click.echo(summary.labels.render())
    echo_check(summary.check)
    if summary.shard is not None:
        click.echo(f"shard {summary.shard} of the prompts; combine the shards with `cai merge DIR... --out OUT`")
    click.echo(f"dataset: {summary.dataset}  (card: {summary.out / 'README.md'})")
    click.echo(
        f"train on it with TRL: DPOTrainer(..., train_dataset=load_from_disk('{summary.dataset}')['preferences'])"
    )


@click.command()
@click.argument("run_dir", metavar="DIR", type=FOLDER)
@judge_model_option(
    "Judge model (default: the run's policy model), or rm:PATH (a preference model, from `cai train rm`); "
    "give it again for each judge of a panel.",
    multiple=True,
)
@base_url_option
@constitution_option("Principles to judge under (default: the run's constitution.yaml).", default=None)
@pair_judge_options
@judge_check_options
@seed_option("Seed of the judge's principle sampling.")
@batch_size_option()
@chunk_size_option("Rows labelled (and saved) together.")
@dtype_option
@device_option
@click.option("--force", is_flag=True, help="Judge again with other settings; the old labels are kept as labels.N.*")
def label(
    run_dir: Path,
    judge_model: tuple[str, ...],
    base_url: str | None,
    constitution: str | None,
    judge_principles: int,
    judge_cot: bool,
    judge_band: tuple[float, float],
    min_margin: float,
    pairing: str,
    judge_aggregate: str,
    judge_check: str,
    judge_check_limit: int | None,
    require_judge_accuracy: float | None,
    seed: int,
    batch_size: int,
    chunk_size: int,
    dtype: str,
    device: str,
    force: bool,
) -> None:
    """Label (or relabel) the pairs of a `cai generate` run with the AI-feedback judge, and rebuild its dataset.

    No answer is regenerated. Rerunning resumes where it stopped; other judge
    settings than those of the labels in DIR need --force (the old labels are
    kept beside). First the judge is checked on labelled comparisons
    (--judge-check); ends with a label-quality report.

    \b
    Examples:
        cai label runs/demo --judge-principles 3
        cai label runs/demo --judge-model ./bigger-model --force --require-judge-accuracy 0.75
        cai label runs/demo --judge-model rm:models/rm --force
    """

    from engine.cli.options import judge_settings
    from engine.cli.output import Interrupted, note
    from engine.generate import label as run_label

    settings = judge_settings(
        judge_principles=judge_principles,
        seed=seed,
        judge_cot=judge_cot,
        judge_band=judge_band,
        min_margin=min_margin,
        pairing=pairing,
        judge_aggregate=judge_aggregate,
    )
    try:
        summary = run_label(
            run_dir,
            settings,
            judge_model=judge_model,
            constitution=constitution,
            batch_size=batch_size,
            chunk_size=chunk_size,
            dtype=dtype,
            device=device,
            force=force,
            judge_check=judge_check,
            judge_check_limit=judge_check_limit,
            require_judge_accuracy=require_judge_accuracy,
            backends=backend_loader(base_url),
            say=note,
        )
    except KeyboardInterrupt:
        raise Interrupted("\ninterrupted: finished labels are saved; run the same command again to resume") from None
    click.echo(f"\n{summary.labelled} rows labelled now, {summary.pairs} preference pairs, {summary.seconds:.0f} s")
    click.echo(summary.stats.render())
    echo_check(summary.check)
    click.echo(f"dataset: {summary.dataset}")


def echo_check(check: JudgeCheck | None) -> None:
    """The judge check again at the end of a run (progress bars have scrolled its first mention away)."""
    if check is None:
        return
    from engine.audit.gate import warning_block

    click.echo(check.summary())
    block = warning_block(check)
    if block is not None:
        click.echo(block, err=True)


@click.command()
@click.argument("run_dirs", metavar="DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option("Merged run folder.", required=True)
@click.option("--allow-partial", is_flag=True, help="Merge even when shards of a split are missing (the card says so).")
@click.option("--force", is_flag=True, help="Replace the run in --out if it holds one.")
def merge(run_dirs: tuple[Path, ...], out: Path, allow_partial: bool, force: bool) -> None:
    """Combine run folders (the shards of `cai generate --shard I/N`) into one run, dataset and card.

    Refuses runs made with another constitution, model, sampling, rounds, seed
    or judge, shards of different splits, a prompt in two runs with different
    rows, and (without --allow-partial) a split with shards missing. OUT is an
    ordinary run folder: `cai label`, `cai export` and `cai train` take it.

    \b
    Example:
        cai merge runs/shard-1 runs/shard-2 runs/shard-3 runs/shard-4 --out runs/all
    """
    from engine.merge import merge as run_merge

    summary = run_merge(list(run_dirs), out, allow_partial=allow_partial, force=force)
    if summary.replaced:
        click.echo(f"--force: replaced the run that was in {summary.out} (a reviews.jsonl there is kept)", err=True)
    if summary.missing:
        click.echo(f"warning: incomplete, shards missing: {', '.join(summary.missing)}", err=True)
    click.echo(
        f"{summary.rows} rows from {len(summary.runs)} runs in {summary.out}"
        + (f" ({summary.duplicates} rows found twice, written once)" if summary.duplicates else "")
        + f", {summary.pairs} preference pairs, {summary.seconds:.0f} s"
    )
    if summary.labels is not None:
        click.echo(summary.labels.render())
    click.echo(f"dataset: {summary.dataset}  (card: {summary.out / 'README.md'})")


@click.command(name="export")
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@out_option("Folder (default: DIR/export).", old=("--output",))
def export_(run_dir: Path, fmt: str, out: Path | None) -> None:
    """Write a run's dataset splits as JSONL or Parquet files (no `datasets` needed to read them).

    Decisions made in `cai review` since the dataset was built are applied
    first (the dataset is rebuilt).

    \b
    Example:
        cai export runs/demo --format parquet
    """
    from engine.cli.output import CommandFailed
    from engine.dataset import DATASET_DIR, export
    from engine.reviewed import apply_new_decisions

    if not (run_dir / DATASET_DIR).is_dir():
        raise CommandFailed(f"{run_dir}: no dataset here; run `cai generate --out {run_dir}` first")
    done = apply_new_decisions(run_dir)  # review decisions newer than the dataset: rebuild it, and say so
    if done is not None:
        click.echo(done.summary())
    for path in export(run_dir, fmt, out):
        click.echo(f"wrote {path}")
