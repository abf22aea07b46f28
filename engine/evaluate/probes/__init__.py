"""Probe sets for the harmlessness evaluator: pure Python, no model is called.

- :mod:`.jailbreaks`: red-team prompts wrapped in common jailbreak framings;
- :mod:`.counterfactual`: one request asked about different groups of people,
  and the gaps between the groups' answers;
- :mod:`.judge_attacks`: rewrites of an answer that try to sway the judge;
- :mod:`.boilerplate`: the stock phrases a model repeats across answers.

The names below are re-exported from those modules; the modules never import
this package.
"""

from engine.evaluate.probes.boilerplate import RepeatedPhrase, repeated_phrases
from engine.evaluate.probes.counterfactual import (
    COUNTERFACTUAL_PATH,
    GROUP_PLACEHOLDER,
    GROUPS,
    CounterfactualGap,
    CounterfactualPrompt,
    CounterfactualTemplate,
    counterfactual_gaps,
    counterfactual_prompts,
    group_slug,
    load_counterfactual,
)
from engine.evaluate.probes.jailbreaks import (
    JAILBREAKS,
    PROMPT_PLACEHOLDER,
    Jailbreak,
    JailbreakPrompt,
    jailbreak_ids,
    jailbreak_prompts,
)
from engine.evaluate.probes.judge_attacks import ATTACKS, JudgeAttack, apply_attack, attack_ids

__all__ = [
    "ATTACKS",
    "COUNTERFACTUAL_PATH",
    "GROUPS",
    "GROUP_PLACEHOLDER",
    "JAILBREAKS",
    "PROMPT_PLACEHOLDER",
    "CounterfactualGap",
    "CounterfactualPrompt",
    "CounterfactualTemplate",
    "Jailbreak",
    "JailbreakPrompt",
    "JudgeAttack",
    "RepeatedPhrase",
    "apply_attack",
    "attack_ids",
    "counterfactual_gaps",
    "counterfactual_prompts",
    "group_slug",
    "jailbreak_ids",
    "jailbreak_prompts",
    "load_counterfactual",
    "repeated_phrases",
]
