"""Errors the prediction API answers with. Each names the problem; none leaves anything charged or logged."""

from __future__ import annotations


class InvalidQuery(ValueError):
    """The request itself is malformed (NaN, wrong shape or dtype, empty text...). Nothing is charged or logged."""


class QueryRefused(RuntimeError):
    """A well-formed request the API will not serve. Nothing is charged.

    Attributes:
        reason: a short machine-readable code: ``"query-budget"``, ``"money-budget"``, ``"account-budget"``,
            ``"banned"``, ``"rate-limit"``, ``"unknown-account"``, ``"unknown-service"``, ``"not-owner"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class RemoteFailure(RuntimeError):
    """A remote service cannot be played on: its server refused the key, stayed unreachable past the retry
    deadline, could not make its books durable, or its books disagree with ours. Not a refusal a player can work
    around (it is no :class:`QueryRefused`): a run that meets it stops and says why."""
