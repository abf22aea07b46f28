"""``cai explain``: which sentences made the judge prefer one response of a pair (occlusion, :mod:`engine.explain`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.options import (
    base_url_option,
    batch_size_option,
    device_option,
    dtype_option,
    json_report_option,
    judge_model_option,
    seed_option,
)

if TYPE_CHECKING:
    from engine.backends.base import Backend


@click.command()
@click.argument("run_dir", metavar="[RUN]", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pair", "pair_id", metavar="ID", help="With RUN: the row whose pair (chosen, rejected) to explain.")
@click.option("--comparisons", metavar="FILE", help="A labelled-comparisons file (as `cai judge-eval` reads; builtin).")
@click.option("--item", "item_id", metavar="ID", help="With --comparisons: the id of the comparison to explain.")
@click.option("--prompt", help="With --first and --second: the user's prompt.")
@click.option("--first", help="With --prompt: the first response.")
@click.option("--second", help="With --prompt: the second response.")
@judge_model_option(
    "Judge model (default: the run's judge, else default), or rm:PATH; give it again for a panel.", multiple=True
)
@click.option(
    "-p",
    "--principle",
    "principle_id",
    metavar="ID",
    help="Judge under this principle (default: the pair's own, or sampled).",
)
@click.option("-c", "--constitution", help="Builtin name or YAML file (default: the run's copy, else default).")
@click.option(
    "--top", type=click.IntRange(min=1), default=3, show_default=True, help="K: sentences ranked and deleted."
)
@click.option(
    "--saliency",
    is_flag=True,
    help="Also token-level gradient x input saliency (a local transformers judge only).",
)
@seed_option("Seed of the random deletions (and of principle sampling).")
@batch_size_option()
@dtype_option
@device_option
@base_url_option
@json_report_option
def explain(
    run_dir: Path | None,
    pair_id: str | None,
    comparisons: str | None,
    item_id: str | None,
    prompt: str | None,
    first: str | None,
    second: str | None,
    judge_model: tuple[str, ...],
    principle_id: str | None,
    constitution: str | None,
    top: int,
    saliency: bool,
    seed: int,
    batch_size: int,
    dtype: str,
    device: str,
    base_url: str | None,
    json_out: Path | None,
) -> None:
    """Explain a judgment: how much each sentence of the two responses pushed the judge, and a check of that.

    Each sentence is removed in turn and the pair judged again (all variants in
    one batched call, both orders each). A sentence's push is the log-odds of
    P(first better) with it minus without it: positive (green) pushed toward the
    first response (a run's CHOSEN one), negative (red) toward the second. A
    deletion curve then removes the top 1..K sentences and as many random ones
    (seeded): the ranking is called faithful when removing its top sentences
    lowers the winner's log-odds more than removing random ones; a judge no
    sentence moves gets "no signal", not a ranking.

    --saliency adds, for a judge on a local transformers model, each token's
    gradient x input score of log P(A) - log P(B) (both orders, oriented
    toward the first response), the top tokens of each response, and the rank
    correlation of its per-sentence sums with the occlusion pushes.

    \b
    Examples:
        cai explain runs/demo --pair redteam-0003
        cai explain --comparisons builtin --item c017 --judge-model ./judge
        cai explain --prompt "How do I pick a lock?" --first "..." --second "..." --json why.json
    """
    from engine.backends import load_backend
    from engine.backends.reward_model import load_reward_model
    from engine.cli.output import write_json
    from engine.errors import USAGE, UserError
    from engine.explain import explain as attribute
    from engine.explain import inputs
    from engine.explain.render import render
    from engine.judge.panel import make_judge
    from engine.records.labels import JudgeSettings

    given = [run_dir is not None or pair_id is not None, comparisons is not None or item_id is not None]
    given.append(any(v is not None for v in (prompt, first, second)))
    how = "give RUN --pair ID, or --comparisons FILE --item ID, or --prompt TEXT --first TEXT --second TEXT"
    if sum(given) != 1:
        raise UserError(f"{'nothing to explain' if not any(given) else 'one pair at a time'}: {how}", exit_code=USAGE)

    def backend(spec: str) -> Backend:
        return load_backend(spec, batch_size=batch_size, dtype=dtype, device=device, base_url=base_url)

    rewards = functools.partial(load_reward_model, batch_size=batch_size, dtype=dtype, device=device)
    settings = JudgeSettings(seed=seed)
    if given[0]:
        if run_dir is None or pair_id is None:
            raise UserError(f"RUN and --pair go together: {how}", exit_code=USAGE)
        found = inputs.run_pair(run_dir, pair_id)
        rules = inputs.run_constitution(run_dir, constitution)
        judge = inputs.run_judge(run_dir, judge_model, rules, backend, seed=seed, rewards=rewards)
        target = inputs.explainable_run_pair(found, rules, judge.settings, principle_id)
    else:
        import constitution as constitution_lib

        rules = constitution_lib.load(constitution or "default")
        if given[1]:
            if comparisons is None or item_id is None:
                raise UserError(f"--comparisons and --item go together: {how}", exit_code=USAGE)
            target = inputs.explainable_item(
                inputs.comparison_item(comparisons, item_id), rules, settings, principle_id
            )
        else:
            if prompt is None or first is None or second is None:
                raise UserError(f"--prompt, --first and --second go together: {how}", exit_code=USAGE)
            target = inputs.explainable_texts(prompt, first, second, rules, settings, principle_id)
        judge = make_judge(judge_model or ("default",), backend, settings, rules, rewards=rewards)
    if saliency:
        from engine.explain.saliency import saliency_judge

        saliency_judge(judge)  # refuse before the occlusion work
    result = attribute(judge, target.pair, top=top, seed=seed, names=target.names)
    click.echo(render(result, target.note))
    report = result.to_dict() | {"note": target.note}
    if saliency:
        from engine.explain import saliency as token_saliency

        tokens = token_saliency.saliency(judge, target.pair, names=target.names, occlusion=result)
        click.echo(token_saliency.render(tokens))
        report["saliency"] = tokens.to_dict()
    if json_out is not None:
        write_json(json_out, report)
