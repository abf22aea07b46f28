"""DPO with per-pair soft labels: TRL's ``DPOTrainer``, changed only where a batch carries targets.

TRL 1.x computes the DPO loss inline in ``DPOTrainer._compute_loss`` with one
global ``beta`` and no per-pair target, so soft labels need a subclass. It is
kept small:

- batches without the target columns (``--labels hard``) go through TRL's own
  ``_compute_loss`` untouched, with every TRL loss type and metric;
- batches with them use the sigmoid loss with a per-pair target probability
  ``p`` and weight ``w``, reading the policy and reference log-probabilities
  the same way TRL does (its fused LM head, its ``compute_ref_log_probs`` for
  a reference model, a disabled LoRA adapter or precomputed values)::

      loss_i = -w_i * (p_i * log s(beta * d_i) + (1 - p_i) * log s(-beta * d_i))
      d_i = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))

  With ``p = 1`` and ``w = 1`` this is exactly TRL's ``sigmoid`` loss. The
  batch loss is the mean over pairs, so weights below 1 shrink a pair's pull.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from trl.trainer.dpo_trainer import DPOTrainer

from engine.train.data import TARGET_COLUMN, WEIGHT_COLUMN
from engine.train.errors import TrainError

LABEL_COLUMNS = (TARGET_COLUMN, WEIGHT_COLUMN)


def soft_dpo_loss(
    delta: torch.Tensor, beta: float, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair sigmoid DPO loss with a target probability (and optional weight) per pair.

    Args:
        delta: Chosen minus rejected log-ratio (policy over reference), one value per pair.
        beta: DPO's temperature.
        target: Probability that ``chosen`` is better, per pair; 1 gives standard DPO.
        weight: Multiplies each pair's loss (default 1).

    Returns:
        One loss value per pair.
    """
    x = beta * delta
    loss = -(target * F.logsigmoid(x) + (1 - target) * F.logsigmoid(-x))
    return loss if weight is None else loss * weight


class LabelCollator:
    """Wraps TRL's preference collator and adds the per-pair target and weight tensors."""

    def __init__(self, inner: Callable[..., dict[str, Any]]) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        batch = self.inner(examples, *args, **kwargs)
        for column in LABEL_COLUMNS:
            if column in examples[0]:
                batch[column] = torch.tensor([float(e[column]) for e in examples], dtype=torch.float32)
        return batch


class SoftLabelDPOTrainer(DPOTrainer):
    """``DPOTrainer`` that honours per-pair ``cai_target_prob`` / ``cai_pair_weight`` columns when present."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        columns = getattr(self.train_dataset, "column_names", None) or []
        self.soft_labels = all(c in columns for c in LABEL_COLUMNS)
        if self.soft_labels:
            problems = []
            if list(self.loss_types) != ["sigmoid"]:
                problems.append(f"loss_type {self.loss_types} (soft labels need ['sigmoid'])")
            if self.f_divergence_type != "reverse_kl":
                problems.append(f"f_divergence_type {self.f_divergence_type!r}")
            if self.ld_alpha is not None:
                problems.append(f"ld_alpha {self.ld_alpha}")
            if self.use_weighting:
                problems.append("use_weighting")
            if problems:
                raise TrainError(
                    "per-pair labels (--labels soft or weighted) work with the plain sigmoid DPO loss only; "
                    f"the settings ask for {', '.join(problems)}: use --labels hard, or drop those settings"
                )
            self.data_collator = LabelCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[no-untyped-call]
        if self._signature_columns is not None and not self._is_vision_dataset:
            self._signature_columns = [*self._signature_columns, *LABEL_COLUMNS]

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        if TARGET_COLUMN not in inputs:
            return super()._compute_loss(model, inputs, return_outputs)  # type: ignore[no-untyped-call]
        inputs = dict(inputs)
        target = inputs.pop(TARGET_COLUMN)
        weight = inputs.pop(WEIGHT_COLUMN, None)
        mode = "train" if model.training else "eval"

        non_model = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
        model_kwargs = {k: v for k, v in inputs.items() if k not in non_model}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:  # MoE models: their load-balancing loss, as TRL adds it
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            reference = self.ref_model if self.ref_model is not None else self.model
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(reference, inputs)  # type: ignore[no-untyped-call]
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        per_pair = soft_dpo_loss(chosen_logratios - rejected_logratios, self.beta, target, weight)
        loss = per_pair.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        metrics = self._metrics[mode]
        gather = self.accelerator.gather
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        metrics["labels/target_prob"].append(gather(target).mean().item())
        if weight is not None:
            metrics["labels/weight"].append(gather(weight).mean().item())
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss


__all__ = ["LabelCollator", "SoftLabelDPOTrainer", "soft_dpo_loss"]
