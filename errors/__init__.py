"""Garda's exceptions: one root, narrow subclasses, in a package of their own.

Every layer may import this package and it imports nothing of Garda's (structlog keeps its
exceptions apart for the same reason: no import loops, no layer reaching up for a type).

Rules decided here:

- ``retriable`` is a class attribute callers ask (``exc.retriable``) instead of listing
  types; ``infra.faults.is_retriable`` extends the question to asyncpg, aiokafka and OS errors.
- The rules raise domain errors (``NotFound``, ``Forbidden``, ``Conflict``, ``Unacceptable``),
  never HTTP status codes: the HTTP edge (``streams.http_errors``) maps them.
"""

from __future__ import annotations


class GardaError(Exception):
    """Root of every error Garda raises on purpose."""

    retriable: bool = False


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
    """A valid event the rules refuse. Permanent: Kafka input goes to the dead-letter topic.

    Raise one of the subclasses; each says why, not how an API should answer.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotFound(Rejected):
    """The event names a case, incident or journey the worker does not have."""


class Forbidden(Rejected):
    """The acting post may not act on this case."""


class Conflict(Rejected):
    """The case or worker is in a state that does not allow this (already resolved, deceased)."""


class Unacceptable(Rejected):
    """The event's content breaks a rule: a required field is missing, dates contradict each
    other, the type or a value is one the rules do not know."""


class CaseConflict(GardaError):
    """A case write would move an existing case to another worker or post (two causes
    derived one case id): refused, the record that caused it is dead-lettered."""


class Unauthorized(GardaError):
    """No valid credential (a missing, unknown or revoked bearer token)."""


class TransientError(GardaError):
    """A failure worth retrying (broker or database unavailable)."""

    retriable = True


class Unavailable(GardaError):
    """A dependency (the database, the broker) stayed unreachable, or refused Garda, at start.

    Raised after the start-up wait is over, so not retriable by the caller."""


class StackError(GardaError):
    """The embedded broker or database could not be started."""


class ChildDied(StackError):
    """The child process exited while we waited for it to become ready."""
