"""The one error of ``cai train``: :class:`TrainError`."""

from __future__ import annotations

from engine.errors import UserError


class TrainError(UserError):
    """Training cannot start or go on as asked; the message says why and what to do."""


__all__ = ["TrainError"]
