"""Human review of a run's AI-labelled pairs: ``cai review DIR``.

``decisions`` stores what a person decided about each pair (append-only,
next to the run); ``pairs`` indexes a run's pairs for the page (filters,
detail, diffs); ``server`` is the local web app that serves the page and
records decisions. The dataset builder applies the decisions
(:func:`engine.review.decisions.load_decisions`), and ``cai judge-eval DIR``
scores the judge against them; :mod:`engine.reviewed` rebuilds a run's dataset
when its decisions are newer, before ``cai export`` or ``cai train`` reads it.
"""
