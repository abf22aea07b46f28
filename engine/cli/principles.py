"""``cai principles``: author, check and preview principle files (constitutions).

Commands: ``validate`` (one line per problem, exit 1 if any), ``show`` (a
summary, one principle in full, or the prompts a model would see with
``--render``), ``schema`` (JSON Schema for editors), ``import`` (published
constitutions in JSON to YAML) and ``tags`` (the taxonomy). None of them loads
a model library.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.options import EXISTING_FILE, FILE, out_option

if TYPE_CHECKING:
    from constitution import Constitution, Principle

SAMPLE_CONVERSATION = [
    {"role": "user", "content": "My neighbour's dog barks all night. How can I make it stop for good?"},
]
"""The conversation ``show --render`` renders prompts for when no ``--prompt`` is given."""
SAMPLE_RESPONSE = (
    "You could talk to your neighbour first, keep a log of the noise, and contact your local council's "
    "noise team if it goes on."
)
"""The response ``show --render`` critiques when no ``--response`` is given."""
SAMPLE_CRITIQUE = "(the critic's reply to the critique prompt above goes here)"
SAMPLE_REVISION = "(the policy's reply to the revision prompt above goes here)"


@click.group()
def principles() -> None:
    """Author, check and preview principle files (constitutions).

    A constitution is a YAML file of principles; each has a critique request,
    a revision request and a comparison question for the judge. Builtin names
    (default, harmlessness, helpfulness) work wherever a path does. The authoring
    guide is principles/README.md.
    """


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
    from engine.cli.output import CommandFailed

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
        raise CommandFailed(f"{n} problem{'s' * (n != 1)} in {where} file{'s' * (where != 1)}")


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
    from constitution import load
    from constitution.schema import show_hidden
    from engine.cli.output import CommandFailed

    constitution = load(source)
    selected = constitution.principles
    if principle_id:
        try:
            selected = [constitution.principle(principle_id)]
        except KeyError as exc:
            raise CommandFailed(show_hidden(f"{source}: {exc.args[0]}")) from None
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
    from constitution.schema import show_hidden
    from engine.prompts import comparison_prompt, critique_prompt, revision_prompt

    conversation = [{"role": "user", "content": prompt}] if prompt else SAMPLE_CONVERSATION
    answer = response or SAMPLE_RESPONSE
    # the path of a real run: a custom template that fails (for --prompt, say) raises a ConstitutionError
    steps = {
        "critique": critique_prompt(p, conversation, answer, c),
        "revision": revision_prompt(p, conversation, answer, SAMPLE_CRITIQUE, c),
        "judge": comparison_prompt(p, conversation, answer, SAMPLE_REVISION, c),
    }
    for step, chat in steps.items():
        click.secho(f"===== {step} prompt · principle {p.id} =====", bold=True)
        for message in chat:
            click.secho(f"[{message['role']}]", fg="cyan")
            click.echo(show_hidden(message["content"]))
        click.echo()


@principles.command()
@out_option("Write to this file.", kind=FILE, old=("--output",))
def schema(out: Path | None) -> None:
    """Print the JSON Schema of principle files (for editor autocompletion).

    Point your editor at it, e.g. with a first line in the YAML file:

    \b
        # yaml-language-server: $schema=./constitution.schema.json
    """
    from constitution import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


@principles.command(name="import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["critique-revision", "constitutions", "comparisons"]))
@click.argument("file", type=EXISTING_FILE)
@out_option("YAML to write.", required=True, kind=FILE, old=("--output",))
@click.option(
    "--comparisons",
    type=EXISTING_FILE,
    help="JSON list of comparison instructions, paired with the imported principles by position.",
)
@click.option("--id", "constitution_id", help="Id of the new constitution (default: from the file name).")
@click.option("--name", help="Name of the new constitution.")
@click.option("--force", is_flag=True, help="Overwrite the --out file if it exists.")
def import_(
    fmt: str,
    file: Path,
    out: Path,
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
    from constitution import dump, load
    from constitution.importers import import_file
    from engine.cli.output import CommandFailed

    if out.exists() and not force:
        raise CommandFailed(f"{out}: exists already; pass --force to overwrite")
    constitution, warnings = import_file(fmt, file, comparisons=comparisons, constitution_id=constitution_id, name=name)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    header = f"# Imported from {file.name} by `cai principles import {fmt}`; review the titles and tags.\n"
    try:
        out.write_text(header + dump(constitution), encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"{out}: cannot write: {exc.strerror}") from None
    written = load(out)  # the hash of what a later load sees: file-wide examples handed down
    n = len(written.principles)
    click.echo(f"wrote {out}: {n} principles (sha256 {written.content_hash[:12]})")


@principles.command()
def tags() -> None:
    """List the tag taxonomy that principles are labelled with."""
    from constitution import HARM_TAGS, QUALITY_TAGS

    for title, group in (("harm categories", HARM_TAGS), ("quality categories", QUALITY_TAGS)):
        click.secho(title, bold=True)
        for tag, text in group.items():
            click.echo(f"  {tag:<22} {text}")
