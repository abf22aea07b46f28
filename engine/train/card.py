"""The model card (``README.md``) of a model trained by ``cai train``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from engine.train.recipes import Recipe
    from engine.train.run import TrainOptions, TrainResult

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_METHODS = {
    "sft": "supervised fine-tuning on the final (revised) answers, TRL `SFTTrainer`, loss on the answer tokens",
    "dpo": "direct preference optimisation on the preference pairs, TRL `DPOTrainer`",
    "grpo": "online RLAIF with TRL `GRPOTrainer`, the constitutional judge as the reward",
}
_REWARDS = {
    "group": "each completion judged against the other completions of its prompt",
    "reference": "each completion judged against the reference answer",
}
_LABELS = {
    "hard": "hard labels: every pair counts fully",
    "weighted": "each pair's loss weighted by the judge's margin (2 * chosen_prob - 1)",
    "soft": "soft labels: the judge's chosen_prob is the target of the sigmoid loss",
}


def _recipe_block(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if k not in ("output_dir",)}
    return yaml.safe_dump(shown, sort_keys=True, default_flow_style=False).strip()


def card_text(options: TrainOptions, result: TrainResult, recipe: Recipe, base_model: str) -> str:
    """The card's Markdown, with YAML front matter the hub reads."""
    data = result.data
    kind = options.kind
    tags = ["constitutional-ai", "rlaif", "cai", "trl", kind]
    lora = result.settings.get("lora")
    if lora:
        tags.append("lora")
    front: dict[str, Any] = {"library_name": "transformers", "tags": tags}
    if _HUB_ID.match(base_model):
        front["base_model"] = base_model
    c = data.constitution
    if c:
        constitution = f"{c['id']} version {c['version']}, sha256 `{c['hash']}`"
    elif data.constitution_hashes:
        constitution = ", ".join(f"sha256 `{h}`" for h in data.constitution_hashes)
    else:
        constitution = "unknown (the data carries no constitution hash)"
    what = {"dpo": "pairs", "sft": "rows", "grpo": "prompts"}[kind]
    rows = f"{data.rows} {what} of split `{data.split}` ({data.total} in the split)"
    if kind == "grpo" and data.folder is None:
        rows = f"{data.rows} prompts"
    method = _METHODS[kind]
    if kind == "grpo":
        method += (
            f" (judge `{options.judge_model}`, {options.judge_principles} principle(s) per prompt and step, "
            f"{_REWARDS.get(data.labels, data.labels)}, both orders; reward 2p - 1)"
        )
    if kind == "dpo":
        method += f"; {_LABELS.get(data.labels, data.labels)}"
        if options.min_margin > 0:
            method += f"; pairs with a judge margin below {options.min_margin} dropped ({data.dropped})"
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {options.out.name}: {kind.upper()} on constitutional self-critique data",
        "",
        f"Trained by `cai train {kind}` from **{base_model}** on data made by `cai generate`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | `{base_model}` |",
        f"| method | {method} |",
        f"| data | `{data.source}`: {rows} |",
        f"| constitution | {constitution} |",
        f"| recipe | {'none (TRL defaults)' if recipe.source == '(none)' else f'`{recipe.source}`'}, "
        "flags on top (the settings below are the result) |",
    ]
    if lora:
        lines.append(
            f"| LoRA | r {lora['r']}, alpha {lora['lora_alpha']}, dropout {lora['lora_dropout']}, "
            f"modules {lora['target_modules']}; merged into the weights (a plain model) |"
        )
    lines += [
        f"| training | {result.steps} steps, {result.seconds:.0f} s, final mean train loss {loss}"
        + (f", {result.processes} processes ({result.distributed})" if result.processes > 1 else "")
        + (f", resumed from `{result.resumed_from}`" if result.resumed_from else "")
        + " |",
        "",
    ]
    if result.notes:
        lines += ["Notes:", "", *(f"- {n}" for n in result.notes), ""]
    lines += [
        "## Settings",
        "",
        "TRL config fields set by the run (everything else is TRL's default). As a file, this block is a recipe:",
        "",
        "```yaml",
        _recipe_block(result.settings),
        "```",
        "",
        "## Use",
        "",
        "A plain Hugging Face model folder (weights, tokenizer with its chat template):",
        "",
        "```bash",
        f"cai generate --model {options.out} --out runs/next --prompts redteam --limit 8",
        "```",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{options.out}")',
        "```",
        "",
        "`cai-train.json` holds the same provenance as JSON; `constitution.yaml` (when present) is the rules the "
        "data was made under.",
        "",
    ]
    return "\n".join(lines)


def write_card(options: TrainOptions, result: TrainResult, recipe: Recipe, base_model: str) -> None:
    """Write ``OUT/README.md``."""
    (options.out / "README.md").write_text(card_text(options, result, recipe, base_model), encoding="utf-8")


__all__ = ["card_text", "write_card"]
