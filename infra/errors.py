"""One root exception type with narrow subclasses."""

from __future__ import annotations


class GardaError(Exception):
    """Root of every error Garda raises on purpose."""


class ConfigError(GardaError):
    """A setting or the policy file is missing or invalid (fails at start)."""


class InvalidEvent(GardaError):
    """An input cannot be decoded or validated: permanent, goes to the dead-letter topic.

    ``field`` names the offending field (dotted path) when there is one.
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class Rejected(GardaError):
    """A valid event the rules refuse (unknown case, action not allowed in this status).

    Permanent: the API answers 4xx, Kafka input goes to the dead-letter topic.
    ``status`` is the HTTP status the API should use.
    """

    def __init__(self, reason: str, status: int = 409) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class TransientError(GardaError):
    """A failure worth retrying (broker or database unavailable)."""


class StackError(GardaError):
    """The embedded broker or database could not be started."""
