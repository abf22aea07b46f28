"""``cai judge-eval``: how well the AI-feedback judge agrees with human-labelled comparisons.

The labelled items, the protocols, the measurements and the report are
:mod:`engine.audit`; the judge is :mod:`engine.judge`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.options import (
    FILE,
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

if TYPE_CHECKING:
    from engine.backends.base import Backend


@click.command(name="judge-eval")
@click.argument("file", default="builtin", metavar="[FILE]")
@judge_model_option(
    "Judge model: default, a folder, a hub id, or rm:PATH (a preference model, scored by our protocol only). "
    "Give it once per judge to compare several.",
    default="default",
    old=("--model",),
    multiple=True,
)
@click.option(
    "--protocol",
    type=click.Choice(["auto", "ours", "as-written", "both"]),
    default="auto",
    show_default=True,
    help="ours: the constitution's comparison prompt, both orders (the judge cai labels with); "
    "as-written: a published multiple-choice file's own prompt, by the log-probability of each option label; "
    "auto: both for such a file, ours for any other.",
)
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
@click.option("--html", "html_out", type=FILE, help="Also write the report as an HTML page with its plots.")
def judge_eval(
    file: str,
    judge_model: tuple[str, ...],
    protocol: str,
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
    html_out: Path | None,
) -> None:
    """Measure AI-feedback judges against human-labelled comparisons, with intervals and calibration.

    FILE is JSONL, one comparison per line: the conversation as `prompt` (or
    `conversation`/`messages`), then `response_a`, `response_b` and `better`
    (A or B), or `chosen` and `rejected`, or lists `corrects` and `incorrects`
    of response texts. A `principle` id per line picks the principle to judge
    under; without one, --judge-principles are sampled. Without FILE, the
    shipped set is used (written by this project, so in-house evidence only).
    FILE may also be a run folder whose pairs people reviewed with `cai
    review`: the accepted and flipped pairs are the comparisons.

    A published multiple-choice evaluation file (the whole question as
    `prompt`, with `Options: (A) [[[...]]] (B) [[[...]]]`, and `corrects` /
    `incorrects` holding option letters) is read as such: its responses are
    the bracketed texts. It is scored by both protocols side by side (see
    --protocol); a file whose options are phrases, not responses, only as
    written.

    A preference model (`--judge-model rm:PATH`, made by `cai train rm`) is
    scored by our protocol only, as the sigmoid of its two rewards: no
    principle applies, its position bias is zero by construction, and it is
    not scored as written (it reads no question).

    Every item is scored in both orders. The report gives, per judge and
    protocol: the accuracy with its 95% interval (a tie counts as wrong; an
    interval that reaches 50% is flagged as not better than chance), the
    accuracy with the better response shown as (A) and as (B), the
    position-bias rate (the two orders disagree: the judge named the same slot
    both times), the Brier score and expected calibration error of the soft
    label, accuracy against coverage when only margins above a threshold are
    kept (the curve that sets --min-margin), and accuracy per category and
    principle. With several --judge-model: Cohen's kappa per pair of judges,
    Krippendorff's alpha, the accuracy of the mean-probability and majority
    labels, and where one judge is right and the other wrong.

    \b
    Examples:
        cai judge-eval
        cai judge-eval hhh_eval.jsonl --html judge.html
        cai judge-eval my_comparisons.jsonl --judge-model ./small --judge-model ./large --json report.json
        cai judge-eval --judge-cot --judge-band 0.3 0.7
        cai judge-eval --judge-model rm:models/rm --judge-model default
        cai judge-eval runs/demo          # against the pairs reviewed in runs/demo
    """
    from constitution import load
    from engine.audit.judges import audit_judges, load_audit_items
    from engine.cli.options import judge_settings
    from engine.cli.output import note, write_json

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
    items = load_audit_items(file, protocol, limit=limit, seed=seed)

    from engine.backends import load_backend

    def backend(spec: str) -> Backend:
        return load_backend(spec, batch_size=batch_size, dtype=dtype, device=device, base_url=base_url)

    from engine.backends.reward_model import load_reward_model

    rewards = functools.partial(load_reward_model, batch_size=batch_size, dtype=dtype, device=device)
    report = audit_judges(judge_model, backend, items, rules, settings, rewards=rewards)
    click.echo(report.render())
    if json_out is not None:
        write_json(json_out, report.to_dict())
    if html_out is not None:
        from engine.audit.html import write_judge_html

        write_judge_html(report, html_out)
        note(f"wrote {html_out}")
