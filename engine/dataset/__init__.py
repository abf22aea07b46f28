"""From trajectories to datasets: TRL's preference format, an SFT split, a card, exports.

The ``preferences`` split is in TRL's conversational preference format
(``prompt`` as a list of messages, ``chosen`` and ``rejected`` as one-message
assistant lists) plus provenance columns; TRL's ``DPOTrainer`` takes it as it
is. When the AI-feedback judge labelled the run (:mod:`engine.judge.store`), a
pair is the judge's chosen and rejected candidate with its soft label
(``chosen_prob``) and margin, and rows the judge could not separate are left
out; without a judge, ``chosen`` is the final revision and ``rejected`` the
initial answer, and ``label_source`` says so.

:mod:`.rows` makes one row of each split, :mod:`.build` streams a run into
Arrow (people's review decisions applied last) and exports it, :mod:`.card`
writes the dataset card.
"""

from engine.dataset.build import DATASET_DIR, RunStats, export, save_dataset
from engine.dataset.card import CARD, write_card
from engine.dataset.rows import preference_row, sft_row

__all__ = ["CARD", "DATASET_DIR", "RunStats", "export", "preference_row", "save_dataset", "sft_row", "write_card"]
