"""The dataset card (``README.md`` of a run folder): how the data was made, what it holds, how good its labels are.

The text is the template ``templates/dataset_card.md.j2``; this module gathers
the numbers it shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.backends.reward_model import is_reward_spec
from engine.cards import render_card
from engine.dataset.build import DATASET_DIR, RunStats
from engine.judge.stats import LabelStats
from engine.records.labels import AI_JUDGE, HUMAN, PREFERENCE_MODEL, REVISION_ASSUMED_BETTER, LabelManifest
from engine.records.run import RunManifest, Shard, missing_shards

CARD = "README.md"


def write_card(
    out: Path,
    manifest: RunManifest,
    stats: RunStats,
    sizes: dict[str, int],
    judged: tuple[LabelManifest, LabelStats] | None = None,
) -> Path:
    """Write the dataset card (``README.md``) from the run's provenance.

    ``judged`` is (the labels' manifest, label statistics) when the judge labelled the pairs.
    """
    path = out / CARD
    text = render_card("engine.dataset", "dataset_card.md.j2", **card_values(out, manifest, stats, sizes, judged))
    path.write_text(text, encoding="utf-8")
    return path


def card_values(
    out: Path,
    manifest: RunManifest,
    stats: RunStats,
    sizes: dict[str, int],
    judged: tuple[LabelManifest, LabelStats] | None,
) -> dict[str, Any]:
    """What the card template shows."""
    current = manifest.constitution
    judge = None
    if judged is not None:
        labelled_by, label_stats = judged
        check = labelled_by.check
        judges = labelled_by.panel or [labelled_by.judge]
        judge = {
            "model": labelled_by.judge,
            "models": judges,
            "preference": all(is_reward_spec(j) for j in judges),
            "some_preference": any(is_reward_spec(j) for j in judges),
            "settings": labelled_by.settings,
            "report": label_stats.render(),
            "check": None if check is None else {"summary": check.summary(), "warnings": check.warnings()},
        }
    reviewed = sum(stats.human.values())
    review = None
    if reviewed or stats.stale_decisions:
        judge_reviewed = stats.judge_agreed + stats.judge_disagreed
        review = {
            "reviewed": reviewed,
            "judged": judge_reviewed,
            "agreed_share": f"{stats.judge_agreed / judge_reviewed:.0%}" if judge_reviewed else "",
        }
    return {
        "c": current,
        "manifest": manifest,
        "s": manifest.sampling,
        "stats": stats,
        "sizes": sizes,
        "judge": judge,
        "review": review,
        "mixed": len(stats.constitutions) > 1 or len(stats.made_by) > 1 or bool(manifest.superseded),
        "constitutions": [
            {
                "id": cid,
                "version": version,
                "digest": digest[:12],
                "rows": count,
                "kept_in": "`constitution.yaml`"
                if digest == current.hash
                else f"`constitutions/{cid}-{digest[:12]}.yaml`",
            }
            for (cid, version, digest), count in stats.constitutions.most_common()
        ],
        "made_by": stats.made_by.most_common(),
        "superseded": [
            "; ".join(d.replace(" (in the folder)", "") for d in before.differences(manifest)) or "the same"
            for before in manifest.superseded
        ],
        "revised_share": f"{stats.revised / max(stats.rows, 1):.0%}",
        "principles": ", ".join(f"`{k}` {v}" for k, v in stats.principles.most_common()),
        "categories": ", ".join(f"{k} {v}" for k, v in stats.categories.most_common()),
        "shard": Shard.parse(manifest.shard) if manifest.shard is not None else None,
        "missing_shards": missing_shards(manifest.merged_from) if manifest.merged_from is not None else [],
        "dataset_path": out / DATASET_DIR,
        "plural": lambda n: "s" * (n != 1),
        "ai_judge": AI_JUDGE,
        "preference_model": PREFERENCE_MODEL,
        "human": HUMAN,
        "revision_assumed_better": REVISION_ASSUMED_BETTER,
    }
