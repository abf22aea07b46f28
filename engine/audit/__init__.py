"""The judge audit: how good a judge is, measured against labelled comparisons, before its labels are trusted.

In data-flow order:

- :mod:`.choice_files`, :mod:`.comparisons`: labelled files (the shipped set,
  JSONL layouts, published multiple-choice evaluation files, reviewed runs).
- :mod:`.calibration`: intervals, Brier score, calibration error, reliability, coverage.
- :mod:`.accuracy`: one judge under one protocol (ours, or the file's prompt as written).
- :mod:`.agreement`: several judges on the same items (kappa, alpha, aggregate labels).
- :mod:`.judges`: which items a file gives each protocol, and every judge scored on them.
- :mod:`.report`, :mod:`.html`: ``cai judge-eval``'s report as text, JSON and an HTML page
  (its template sits with the evaluation report's in ``engine/evaluate/templates``, whose style it shares).
- :mod:`.gate`: the judge check before ``cai generate`` and ``cai label`` label a run.
"""
