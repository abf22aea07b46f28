"""The model card (``README.md``) of a model trained by ``cai train``.

The card's text is the template ``templates/model_card.md.j2``, rendered by
:func:`engine.cards.render_card`. Names, paths and notes go into it as they
are (a card is Markdown, nothing is escaped); what the method says about
itself comes from :data:`engine.train.methods.METHODS`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import yaml

from engine.cards import render_card
from engine.train.methods import METHODS

if TYPE_CHECKING:
    from engine.train.data import TrainData
    from engine.train.options import TrainOptions, TrainResult
    from engine.train.recipes import Recipe

TEMPLATE = "model_card.md.j2"
"""The card's template, in ``engine/train/templates``."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _front_matter(kind: str, lora: bool, base_model: str) -> str:
    """The YAML front matter the hub reads: library, tags, and the base model when it is a hub id."""
    tags = ["constitutional-ai", "rlaif", "cai", "trl", kind]
    if lora:
        tags.append("lora")
    front: dict[str, Any] = {"library_name": "transformers", "tags": tags}
    if _HUB_ID.match(base_model):
        front["base_model"] = base_model
    return yaml.safe_dump(front, sort_keys=False).strip()


def _constitution(data: TrainData) -> str:
    """The rules the data was made under, as far as the data says."""
    c = data.constitution
    if c:
        return f"{c['id']} version {c['version']}, sha256 `{c['hash']}`"
    if data.constitution_hashes:
        return ", ".join(f"sha256 `{h}`" for h in data.constitution_hashes)
    return "unknown (the data carries no constitution hash)"


def _recipe_block(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if k not in ("output_dir",)}
    return yaml.safe_dump(shown, sort_keys=True, default_flow_style=False).strip()


def card_text(options: TrainOptions, result: TrainResult, recipe: Recipe, base_model: str) -> str:
    """The card's Markdown, with YAML front matter the hub reads.

    Args:
        options: What the run was asked to do.
        result: What it did.
        recipe: The recipe it read (``(none)`` for TRL's defaults).
        base_model: The base model's recorded name.
    """
    method = METHODS[options.kind]
    data = result.data
    lora = result.settings.get("lora")
    return render_card(
        "engine.train",
        TEMPLATE,
        front_matter=_front_matter(options.kind, bool(lora), base_model),
        name=options.out.name,
        kind=options.kind,
        base_model=base_model,
        method=method.summary + method.card_details(options, data),
        data=data,
        unit=method.unit,
        constitution=_constitution(data),
        recipe=None if recipe.source == "(none)" else recipe.source,
        lora=lora,
        steps=result.steps,
        seconds=f"{result.seconds:.0f}",
        loss=f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a",
        processes=result.processes,
        distributed=result.distributed,
        resumed_from=result.resumed_from,
        evaluation=result.evaluation.get("summary"),
        notes=result.notes,
        settings=_recipe_block(result.settings),
        out=options.out,
    )


def write_card(options: TrainOptions, result: TrainResult, recipe: Recipe, base_model: str) -> None:
    """Write ``OUT/README.md``."""
    (options.out / "README.md").write_text(card_text(options, result, recipe, base_model), encoding="utf-8")


__all__ = ["TEMPLATE", "card_text", "write_card"]
