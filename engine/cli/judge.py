"""``cai judge-eval``: how well the AI-feedback judge agrees with human-labelled comparisons.

The comparisons come from :mod:`engine.evaluate.comparisons` (the shipped set,
a JSONL file, or the pairs people reviewed in a run), the judge from
:mod:`engine.judge`, the measurements from :mod:`engine.evaluate.judge_accuracy`.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.options import (
    base_url_option,
    batch_size_option,
    comparison_judge_options,
    constitution_option,
    device_option,
    dtype_option,
    json_report_option,
    judge_model_option,
    seed_option,
)


@click.command(name="judge-eval")
@click.argument("file", default="builtin", metavar="[FILE]")
@judge_model_option("Judge model: default, a folder or a hub id.", default="default", old=("--model",))
@constitution_option()
@comparison_judge_options
@click.option(
    "--limit", type=click.IntRange(min=1), help="Use only N comparisons, sampled (--seed) over their categories."
)
@seed_option("Seed of principle sampling and of --limit.")
@batch_size_option("Requests per pass.", kind=click.IntRange(min=1))
@dtype_option
@device_option
@base_url_option
@json_report_option
def judge_eval(
    file: str,
    judge_model: str,
    constitution: str,
    judge_principles: int,
    judge_cot: bool,
    judge_cot_reader: str,
    judge_band: tuple[float, float],
    judge_cot_max_new_tokens: int,
    min_margin: float,
    limit: int | None,
    seed: int,
    batch_size: int,
    dtype: str,
    device: str,
    base_url: str | None,
    json_out: Path | None,
) -> None:
    """Check the AI-feedback judge against human-labelled comparisons.

    FILE is JSONL, one comparison per line: the conversation as `prompt` (or
    `conversation`/`messages`), then `response_a`, `response_b` and `better`
    (A or B), or `chosen` and `rejected`, or lists `corrects` and `incorrects`.
    A `principle` id per line picks the principle to judge under; without one,
    --judge-principles are sampled. Without FILE, the shipped set is used
    (64 comparisons across the harm categories and helpfulness).
    FILE may also be a run folder whose pairs people reviewed with `cai
    review`: the accepted and flipped pairs are the comparisons (agreement of
    the judge with people).

    Every comparison is judged in both orders. The report gives the accuracy
    (orders averaged; a tie counts as wrong), the accuracy with the better
    response shown as (A) and as (B), and the position-bias rate: how often the
    two orders disagree, i.e. the judge named the same slot both times.

    \b
    Examples:
        cai judge-eval
        cai judge-eval my_comparisons.jsonl --judge-model ./judge-model --json report.json
        cai judge-eval --judge-cot --judge-band 0.3 0.7
        cai judge-eval runs/demo          # against the pairs reviewed in runs/demo
    """

    from constitution import load
    from engine.cli.options import judge_settings
    from engine.cli.output import write_json
    from engine.evaluate.comparisons import load_comparisons
    from engine.evaluate.judge_accuracy import comparison_principles, evaluate_judge
    from engine.judge import Judge

    settings = judge_settings(
        judge_principles=judge_principles,
        seed=seed,
        judge_cot=judge_cot,
        judge_cot_reader=judge_cot_reader,
        judge_band=judge_band,
        judge_cot_max_new_tokens=judge_cot_max_new_tokens,
        min_margin=min_margin,
    )
    rules = load(constitution)
    items = load_comparisons(file)
    if limit is not None:  # a sample spread over the categories, as cai eval --limit takes prompts
        from engine.sources import sample_ids

        chosen = sample_ids(((c.id, None, c.category) for c in items), limit, seed=seed)
        items = [c for c in items if c.id in chosen]
    principles = comparison_principles(items, rules, settings.principles, settings.seed)

    from engine.backends import load_backend

    backend = load_backend(judge_model, batch_size=batch_size, dtype=dtype, device=device, base_url=base_url)
    report = evaluate_judge(Judge(backend, settings, rules), items, principles, file=file)
    click.echo(report.render())
    if json_out is not None:
        write_json(json_out, report.to_dict())
