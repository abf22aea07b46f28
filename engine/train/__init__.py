"""``cai train``: fine-tune a model with TRL on the data ``cai generate`` made.

- :func:`train` with :class:`TrainOptions` runs ``sft`` (TRL's ``SFTTrainer`` on
  the ``sft`` split), ``dpo`` (TRL's ``DPOTrainer`` on the ``preferences``
  split, with the judge's soft labels when the pairs carry them) or ``grpo``
  (TRL's ``GRPOTrainer`` with the constitutional judge as the reward) and
  saves a plain Hugging Face model folder with a model card. What each method
  uses is one table, :data:`engine.train.methods.METHODS`.
- Recipes (:mod:`engine.train.recipes`) are YAML files of TRL's own config
  fields; the shipped ones live in ``engine/recipes``.
- :func:`soft_dpo_loss` is the per-pair soft-label DPO loss.

Where things live, in the order a run uses them:

- :mod:`~engine.train.options`: the run's records (options, plan, result);
- :mod:`~engine.train.recipes`: recipe files and the shipped accelerate configs;
- :mod:`~engine.train.fields`, :mod:`~engine.train.limits`, :mod:`~engine.train.settings`:
  recipe and flags checked and layered into one TRL config;
- :mod:`~engine.train.data`, :mod:`~engine.train.grpo`: what is trained on, the judge as a reward;
- :mod:`~engine.train.methods`: the table of methods;
- :mod:`~engine.train.distributed`, :mod:`~engine.train.preflight`: every check before the model loads;
- :mod:`~engine.train.checkpoints`: the output folder, resume and force;
- :mod:`~engine.train.model`: loading, merging LoRA, saving;
- :mod:`~engine.train.card`, :mod:`~engine.train.run`: the model card, and the run itself.

Importing this package is cheap; torch, transformers and trl load when a run
starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.train.data import LABEL_MODES, TrainData, preference_data, sft_data
from engine.train.errors import TrainError
from engine.train.options import TrainOptions, TrainResult
from engine.train.recipes import builtin_recipes, read_recipe
from engine.train.run import train

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
