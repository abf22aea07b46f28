"""Markdown cards (the dataset card, the model card) rendered from Jinja2 template files.

Each package keeps its card templates in its ``templates/`` folder. Cards are
Markdown, so nothing is HTML-escaped; every value a card shows is put in by the
code that renders it, and a missing one is an error (``StrictUndefined``), never
an empty gap. Block tags take their own line away (``trim_blocks``,
``lstrip_blocks``), so a template reads like the card it makes.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.cache
def _environment(package: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_card(package: str, template_name: str, **context: Any) -> str:
    """Render ``package``'s ``templates/template_name`` with ``context``.

    Args:
        package: The package that holds the template, e.g. ``"engine.dataset"``.
        template_name: The file in its ``templates`` folder, e.g. ``"dataset_card.md.j2"``.
        **context: The values the template shows.
    """
    return _environment(package).get_template(template_name).render(**context)
