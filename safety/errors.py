"""Typed errors of the safety interlock.

A `Refusal` names the rule, the offending value, the limit and the channel so the
clinician's message and the treatment record say exactly why nothing happened.
"""

from __future__ import annotations

from typing import Any


class SafetyError(Exception):
    """Base of every error raised by the safety package."""


class Refusal(SafetyError):
    """A request refused by a named safety rule; `str()` is the clinician's message."""

    def __init__(
        self,
        rule: str,
        message: str,
        *,
        value: Any = None,
        limit: Any = None,
        channel: int | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.value = value
        self.limit = limit
        self.channel = channel
        self.detail = detail
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"Refusal({self.rule!r}, {self.message!r})"

    def as_record(self) -> dict[str, Any]:
        """Plain JSON-able form for the treatment record."""
        return {
            "rule": self.rule,
            "message": self.message,
            "value": _plain(self.value),
            "limit": _plain(self.limit),
            "channel": self.channel,
            "detail": self.detail,
        }


class InterlockStateError(SafetyError):
    """A call made in a state that forbids it (tripped session, forged approval...)."""


def _plain(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else repr(x)
    return str(x)
