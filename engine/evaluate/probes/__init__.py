"""Probe sets for the harmlessness evaluator: pure Python, no model is called.

- :mod:`.jailbreaks`: red-team prompts wrapped in common jailbreak framings;
- :mod:`.counterfactual`: one request asked about different groups of people,
  and the gaps between the groups' answers;
- :mod:`.judge_attacks`: rewrites of an answer that try to sway the judge;
- :mod:`.boilerplate`: the stock phrases a model repeats across answers;
- :mod:`.fact_check`: questions with a known answer and the checker that reads
  which answer a reply gives; :mod:`.pushback` and :mod:`.steering` ask them
  (sycophancy toward a user's doubt, toward a user's stated view);
- :mod:`.judge_sycophancy`: does the judge prefer agreeing with the user over
  being correct?

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
from engine.evaluate.probes.fact_check import FactItem, check_answer, load_facts
from engine.evaluate.probes.jailbreaks import (
    JAILBREAKS,
    PROMPT_PLACEHOLDER,
    Jailbreak,
    JailbreakPrompt,
    jailbreak_ids,
    jailbreak_prompts,
)
from engine.evaluate.probes.judge_attacks import ATTACKS, JudgeAttack, apply_attack, attack_ids
from engine.evaluate.probes.judge_sycophancy import JUDGE_SYCOPHANCY_PATH, JudgeSycophancyItem, load_judge_items
from engine.evaluate.probes.pushback import PUSHBACK_PATH, pushback_turn
from engine.evaluate.probes.steering import STEERING_PATH, steered_question

__all__ = [
    "ATTACKS",
    "COUNTERFACTUAL_PATH",
    "GROUPS",
    "GROUP_PLACEHOLDER",
    "JAILBREAKS",
    "JUDGE_SYCOPHANCY_PATH",
    "PROMPT_PLACEHOLDER",
    "PUSHBACK_PATH",
    "STEERING_PATH",
    "CounterfactualGap",
    "CounterfactualPrompt",
    "CounterfactualTemplate",
    "FactItem",
    "Jailbreak",
    "JailbreakPrompt",
    "JudgeAttack",
    "JudgeSycophancyItem",
    "RepeatedPhrase",
    "apply_attack",
    "attack_ids",
    "check_answer",
    "counterfactual_gaps",
    "counterfactual_prompts",
    "group_slug",
    "jailbreak_ids",
    "jailbreak_prompts",
    "load_counterfactual",
    "load_facts",
    "load_judge_items",
    "pushback_turn",
    "repeated_phrases",
    "steered_question",
]
