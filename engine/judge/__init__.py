"""The AI-feedback judge: which of two responses better follows a principle, as a soft label.

Modules: :mod:`.verdicts` (option strings, reading a written verdict),
:mod:`.principles` (the one principle sampler), :mod:`.pairwise` (the
:class:`Judge`), :mod:`.pairs` (choosing a trajectory's pair),
:mod:`.stats` (label quality), :mod:`.store` (``labels.jsonl``).

How a pair is judged
    The judge sees the comparison prompt (``comparison.jinja``, or the
    constitution's own ``comparison`` template): the conversation, the
    principle's comparison question, and the two responses quoted as (A) and
    (B). It does not generate: the backend's ``score`` returns the
    log-probabilities of the option strings ``"(A)"`` and ``"(B)"`` as the start
    of the judge's reply, and their normalised probabilities are its answer.
    With the SmolLM2 tokenizer both options are ``"(" letter ")"``: the shared
    ``"("`` cancels in the normalisation, so the label rests on the letter
    token the prompt asks for.

    Every pair is judged in **both orders** (first response as (A), then as
    (B)) and the two probabilities are averaged, so a judge that always answers
    (A) gives 0.5 and the pair is marked ``disagreed``. With ``principles=K``
    the pair is judged under K principles sampled by weight (without
    replacement, seeded, recorded) and the mean is taken. All pairs x orders x
    principles of one :meth:`Judge.compare` call go to the backend in ONE
    ``score`` call (plus one ``generate`` call in chain-of-thought mode).

Chain-of-thought mode
    The judge first writes its reasoning (``comparison_cot.jinja`` asks it to
    reason, then end with ``Answer: (A)`` or ``Answer: (B)``; one batched
    ``generate`` call). With ``cot_reader="score"`` (default) the reasoning is
    cut where the judge's own ``Answer:`` line starts, and the options are
    scored as that reasoning followed by the fixed lead ``"\\nAnswer: ("`` and
    ``"A)"`` / ``"B)"``. The backend interface scores options only as the start
    of a reply, so each option string carries the reasoning and the lead in
    front: that common prefix has the same log-probability under both options
    and cancels in the normalisation, so the result is P(letter | prompt,
    reasoning, lead). The label is thus the judge's own probability at the
    point where it gives its verdict, even when its reasoning was cut short by
    the token limit. A reply with no text at all cannot be read and is marked
    unparsed. With ``cot_reader="parse"`` (for backends without log-probs)
    the verdict is read from the text; a reply without one is unparsed.

    As in the Constitutional AI paper, chain-of-thought probabilities are
    over-confident, so each order's probability is clamped to ``band``
    (default 0.4-0.6) before averaging. The judge's text and its stated
    verdict are kept for audit.

Unreadable judgments
    An order whose answer cannot be read (unparsed reply, non-finite scores)
    is kept with its raw text and marked ``unparsed``. A principle counts for a
    pair only when BOTH orders were read (one order alone would bring the
    position bias back); a pair with no such principle has no probability and
    never becomes a label.

Choosing the pair of a trajectory
    Candidates are the initial answer and every revision that changed the
    text (duplicates removed). ``pairing="best-worst"`` (default) judges all
    pairs of candidates (n is small: 2 or 3 for 1 or 2 rounds), ranks them by
    their mean probability of beating the others, and labels best vs worst
    with the judge's DIRECT probability for that pair (oriented so that
    ``chosen_prob >= 0.5``; in a preference cycle the direct judgment wins over
    the ranking). ``pairing="final-initial"`` judges only the final answer
    against the first one. ``margin = 2 * chosen_prob - 1``; ties (level
    candidates, a perfect cycle) and margins below ``min_margin`` are dropped
    and counted. :func:`choose_pair` is a pure function of the judged
    probabilities; :class:`LabelStats` summarises a labelling run.

Panels
    :class:`~engine.judge.panel.Panel`: several judges label together (their
    mean probability or majority), each judge's probability kept.

Preference models
    A judge model given as ``rm:PATH`` (``cai train rm`` output) is a
    :class:`~engine.judge.preference_model.PreferenceModelJudge`: P(first
    better) is the sigmoid of its two rewards, each response scored once in
    one forward pass; no principle, no prompt, no position bias. Its labels
    say so (``label_source`` ``preference_model``). It can sit in a panel.

How good a judge is
    :mod:`engine.audit` measures judges on labelled comparisons (``cai
    judge-eval``) and checks the judge before a run is labelled (the gate).
"""

from engine.judge.pairs import Choice, choose_pair, judge_trajectories, pairs_to_judge
from engine.judge.pairwise import Judge, Pair
from engine.judge.principles import sample_principles
from engine.judge.stats import LabelStats, LabelTally, quantiles
from engine.judge.store import LABEL_MANIFEST, LABELS, LabelStore, label_rows
from engine.judge.verdicts import COT_LEAD, COT_OPTIONS, OPTIONS, option_probability, read_verdict

__all__ = [
    "COT_LEAD",
    "COT_OPTIONS",
    "LABELS",
    "LABEL_MANIFEST",
    "OPTIONS",
    "Choice",
    "Judge",
    "LabelStats",
    "LabelStore",
    "LabelTally",
    "Pair",
    "choose_pair",
    "judge_trajectories",
    "label_rows",
    "option_probability",
    "pairs_to_judge",
    "quantiles",
    "read_verdict",
    "sample_principles",
]
