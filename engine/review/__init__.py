"""Human review of a run's AI-labelled pairs: ``cai review DIR``.

``decisions`` appends what a person decided about each pair to
``reviews.jsonl`` (locked, append-only, next to the run); ``pairs`` indexes a
run's pairs for the page (filters, detail, diffs); ``server`` is the local web
app that serves the page and records decisions. The decisions themselves are
records (:mod:`engine.records.decisions`): the dataset builder applies them and
``cai judge-eval DIR`` scores the judge against them without importing this
web app; :mod:`engine.reviewed` rebuilds a run's dataset when its decisions are
newer, before ``cai export`` or ``cai train`` reads it.
"""
