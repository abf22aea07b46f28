"""The error of ``cai explain`` and the review page's explanations: bad input, said in one line."""

from __future__ import annotations

from engine.errors import UserError


class ExplainError(UserError):
    """Nothing to explain as asked: no such pair or item, an empty response, a judgment the judge cannot read."""


__all__ = ["ExplainError"]
