"""``cai train``: fine-tune a model with TRL on the data ``cai generate`` made.

- :func:`train` with :class:`TrainOptions` runs ``sft`` (TRL's ``SFTTrainer`` on
  the ``sft`` split) or ``dpo`` (TRL's ``DPOTrainer`` on the ``preferences``
  split, with the judge's soft labels when the pairs carry them) and saves a
  plain Hugging Face model folder with a model card.
- Recipes (:mod:`engine.train.recipes`) are YAML files of TRL's own config
  fields; the shipped ones live in ``engine/recipes``.
- :func:`soft_dpo_loss` is the per-pair soft-label DPO loss.

Importing this package is cheap; torch, transformers and trl load when a run
starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.train.data import LABEL_MODES, TrainData, preference_data, sft_data
from engine.train.recipes import TrainError, builtin_recipes, read_recipe
from engine.train.run import TrainOptions, TrainResult, train

if TYPE_CHECKING:
    import torch


def soft_dpo_loss(
    delta: torch.Tensor, beta: float, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair sigmoid DPO loss with a target probability; see :mod:`engine.train.soft_dpo`."""
    from engine.train.soft_dpo import soft_dpo_loss as loss

    return loss(delta, beta, target, weight)


def __getattr__(name: str) -> Any:
    if name == "SoftLabelDPOTrainer":
        from engine.train.soft_dpo import SoftLabelDPOTrainer

        return SoftLabelDPOTrainer
    raise AttributeError(name)


__all__ = [
    "LABEL_MODES",
    "TrainData",
    "TrainError",
    "TrainOptions",
    "TrainResult",
    "builtin_recipes",
    "preference_data",
    "read_recipe",
    "sft_data",
    "soft_dpo_loss",
    "train",
]
