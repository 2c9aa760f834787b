"""Which failures are worth retrying: one question, asked of any exception.

``is_retriable(exc)`` answers for Garda's own errors (their ``retriable`` class attribute),
aiokafka's (the same attribute, which aiokafka sets per Kafka error code), asyncpg's (by
SQLSTATE class) and the operating system's (every ``OSError``: refused, reset, timed out).

Rules decided here:

- PostgreSQL states worth retrying: the connection classes 08 (connection exception), 53
  (insufficient resources: disk full, out of memory, too many connections) and 57 (operator
  intervention: shutdown, cannot connect now, query cancelled by a statement timeout), plus
  40001 (serialization failure), 40P01 (deadlock), 55P03 (lock timeout), 25006 (read-only
  transaction: a standby during a failover) and 55000 (object not in prerequisite state:
  what a database that does not accept connections answers; Garda's own statements never
  raise it).
- ``asyncpg.InterfaceError`` (the client lost its connection mid-operation) is retriable.
- Anything else is permanent: the processor isolates the record and dead-letters it.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

from errors import GardaError

RETRIABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
RETRIABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "25006", "55000"})


def is_retriable(exc: BaseException) -> bool:
    """True when the same operation may succeed if tried again later."""
    if isinstance(exc, GardaError | KafkaError):
        return bool(exc.retriable)
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in RETRIABLE_SQLSTATE_CLASSES or state in RETRIABLE_SQLSTATES
    return isinstance(exc, OSError | asyncpg.InterfaceError)
