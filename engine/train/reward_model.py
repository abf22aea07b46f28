"""A preference model with soft labels: TRL's ``RewardTrainer``, changed only where a batch carries targets.

TRL 1.x's reward trainer takes hard pairs: its loss is ``-log s(r_w - r_l)``
(optionally minus a margin). The AI judge's labels are probabilities, so, as
for DPO (:mod:`engine.train.soft_dpo`), a small subclass reads a per-pair
target ``p`` and weight ``w`` when the batch has them::

    loss_i = -w_i * (p_i * log s(r_w - r_l) + (1 - p_i) * log s(r_l - r_w))

This is the Bradley-Terry likelihood of the judge's soft label: its minimum
in ``r_w - r_l`` is at ``s(r_w - r_l) = p``, so a pair the judge was 70% sure
of is fitted to 70%, not pushed to certainty. With ``p = 1`` and ``w = 1`` it
is TRL's loss exactly; batches without the target columns (``--labels hard``)
go through TRL's own ``compute_loss`` untouched. Every metric TRL logs (reward
range, accuracy, margin, tokens) is logged either way.

:func:`heldout_accuracy` scores held-out pairs after training: how often the
model ranks a pair the way its label does, with a 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from trl.trainer.reward_trainer import RewardTrainer

from engine.train.data import TARGET_COLUMN, WEIGHT_COLUMN
from engine.train.errors import TrainError
from engine.train.soft_dpo import LABEL_COLUMNS, LabelCollator


def soft_bt_loss(delta: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair Bradley-Terry loss with a target probability (and optional weight) per pair.

    Args:
        delta: Reward of chosen minus reward of rejected, one value per pair.
        target: Probability that ``chosen`` is better, per pair; 1 gives TRL's loss.
        weight: Multiplies each pair's loss (default 1).

    Returns:
        One loss value per pair.
    """
    loss = -(target * F.logsigmoid(delta) + (1 - target) * F.logsigmoid(-delta))
    return loss if weight is None else loss * weight


class SoftRewardTrainer(RewardTrainer):
    """``RewardTrainer`` that honours per-pair ``cai_target_prob`` / ``cai_pair_weight`` columns when present."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        columns = getattr(self.train_dataset, "column_names", None) or []
        self.soft_labels = all(c in columns for c in LABEL_COLUMNS)
        if self.soft_labels:
            if getattr(self.args, "center_rewards_coefficient", None) is not None:
                raise TrainError(
                    "per-pair labels (--labels soft or weighted) and center_rewards_coefficient are not combined "
                    "here: use --labels hard, or drop center_rewards_coefficient"
                )
            self.data_collator = LabelCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[no-untyped-call]
        if self._signature_columns is not None:
            self._signature_columns = [*self._signature_columns, *LABEL_COLUMNS]

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if TARGET_COLUMN not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[no-untyped-call]
        inputs = dict(inputs)
        target = inputs.pop(TARGET_COLUMN)
        weight = inputs.pop(WEIGHT_COLUMN, None)
        # TRL's own pass: the forward, its metrics, and its (hard) loss, which is replaced below
        _, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)  # type: ignore[no-untyped-call]
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        loss = soft_bt_loss(chosen - rejected, target.to(chosen.dtype), weight).mean()
        mode = "train" if model.training else "eval"
        self._metrics[mode]["labels/target_prob"].append(self.accelerator.gather(target).mean().item())
        if weight is not None:
            self._metrics[mode]["labels/weight"].append(self.accelerator.gather(weight).mean().item())
        return (loss, outputs) if return_outputs else loss


@dataclass(frozen=True)
class Heldout:
    """How the trained model ranks the held-out pairs."""

    pairs: int
    correct: int
    """Pairs where the chosen response got the higher reward."""
    mean_prob: float
    """Mean of s(r_chosen - r_rejected): the model's own probability for the labelled order."""
    mean_target: float
    """Mean of the labels' probabilities (1 for hard labels): what ``mean_prob`` is fitted to."""

    @property
    def accuracy(self) -> float:
        """Share of held-out pairs ranked as labelled."""
        return self.correct / self.pairs

    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy."""
        from engine.audit.calibration import wilson_interval

        return wilson_interval(self.correct, self.pairs)

    def as_dict(self) -> dict[str, Any]:
        """The record ``cai-train.json`` keeps."""
        low, high = self.interval()
        return {
            "pairs": self.pairs,
            "correct": self.correct,
            "accuracy": round(self.accuracy, 4),
            "interval95": [round(low, 4), round(high, 4)],
            "mean_prob": round(self.mean_prob, 4),
            "mean_target": round(self.mean_target, 4),
        }

    def summary(self) -> str:
        """One line: accuracy with its interval, and the fitted probability against the labels'."""
        low, high = self.interval()
        return (
            f"held-out accuracy {self.accuracy:.0%} ({self.correct}/{self.pairs}, 95% interval {low:.0%}-{high:.0%}); "
            f"mean P(chosen) {self.mean_prob:.2f} against the labels' {self.mean_target:.2f}"
        )


def heldout_accuracy(trainer: Any) -> Heldout | None:
    """Score the trainer's (prepared) held-out pairs with the trained model; None when there are none."""
    dataset = trainer.eval_dataset
    if dataset is None or len(dataset) == 0:
        return None
    loader = trainer.get_eval_dataloader(dataset)
    model = trainer.model
    was_training = model.training
    model.eval()
    correct, pairs, probs, targets = 0, 0, 0.0, 0.0
    try:
        with torch.no_grad():
            for batch in loader:
                target = batch.pop(TARGET_COLUMN, None)
                batch.pop(WEIGHT_COLUMN, None)
                batch.pop("margin", None)
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                chosen, rejected = torch.chunk(out.logits.float().squeeze(-1), chunks=2)
                gathered = trainer.accelerator.gather_for_metrics(torch.stack([chosen, rejected], dim=1))
                chosen, rejected = gathered[:, 0], gathered[:, 1]
                correct += int((chosen > rejected).sum().item())
                pairs += len(chosen)
                probs += float(torch.sigmoid(chosen - rejected).sum().item())
                if target is not None:
                    targets += float(trainer.accelerator.gather_for_metrics(target.float()).sum().item())
                else:
                    targets += len(chosen)
    finally:
        model.train(was_training)
    return Heldout(pairs, correct, probs / pairs, targets / pairs) if pairs else None


__all__ = ["Heldout", "SoftRewardTrainer", "heldout_accuracy", "soft_bt_loss"]
