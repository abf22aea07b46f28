"""The harmlessness evaluator behind ``cai eval`` (and ``cai eval-scorers``, ``cai judge eval``).

Where things live, in the order an evaluation runs:

- :mod:`.run`: :func:`~engine.evaluate.run.evaluate`, the stages in order;
- :mod:`.eval_prompts`: every prompt each model answers;
- :mod:`.folder`: the settings an evaluation folder's answers depend on;
- :mod:`.answers`: what the folder stores (answers, pairwise verdicts, attacks);
- :mod:`.stages`: the stages that call models (answers, pairwise, judge robustness);
- :mod:`.scoring`, :mod:`.refusal`, :mod:`.harm_classifier`, :mod:`.pointwise`:
  the per-answer scorers (refusal detector, harm classifier, pointwise judge);
- :mod:`.probes`: jailbreaks, counterfactual bias, judge attacks, boilerplate;
- :mod:`.metrics`: how one answer counts, rates with bootstrap intervals, Elo;
- :mod:`.aggregate`: from stored records to the report's numbers (no model called);
- :mod:`.report`: the report's JSON schema, comparison of reports, CI gates;
- :mod:`.html`, :mod:`.formatting`, :mod:`.charts` and ``templates/``: ``report.html``
  (``templates/judge_eval.html.j2`` is :mod:`engine.audit.html`'s page, in the same style).

How good the judge itself is (``cai judge-eval``, the judge gate) is :mod:`engine.audit`.
"""
