"""The error classification: what is retried, and what the HTTP edge answers."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, RecordTooLargeError

from errors import (
    ChildDied,
    ConfigError,
    Conflict,
    Forbidden,
    GardaError,
    InvalidEvent,
    NotFound,
    Rejected,
    StackError,
    TransientError,
    Unacceptable,
    Unauthorized,
)
from infra.faults import is_retriable
from streams.http_errors import http_status


def _pg(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("test")


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (TransientError("broker down"), True),
        (ConfigError("bad"), False),
        (InvalidEvent("bad"), False),
        (Conflict("resolved"), False),
        (ChildDied(), False),
        (KafkaConnectionError(), True),
        (RecordTooLargeError(), False),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (_pg(asyncpg.PostgresConnectionError), True),
        (_pg(asyncpg.CannotConnectNowError), True),
        (_pg(asyncpg.TooManyConnectionsError), True),
        (_pg(asyncpg.SerializationError), True),
        (_pg(asyncpg.DeadlockDetectedError), True),
        (_pg(asyncpg.AdminShutdownError), True),
        (_pg(asyncpg.QueryCanceledError), True),
        (_pg(asyncpg.DiskFullError), True),
        (_pg(asyncpg.LockNotAvailableError), True),
        (_pg(asyncpg.ReadOnlySQLTransactionError), True),
        (_pg(asyncpg.ObjectNotInPrerequisiteStateError), True),  # connections not allowed
        (asyncpg.InterfaceError("connection closed"), True),
        (_pg(asyncpg.UniqueViolationError), False),
        (_pg(asyncpg.UndefinedColumnError), False),
        (_pg(asyncpg.InvalidTextRepresentationError), False),
        (KeyError("bug"), False),
        (ValueError("bug"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_retriable(exc: BaseException, retriable: bool) -> None:
    assert is_retriable(exc) is retriable


def test_retriable_is_a_class_attribute() -> None:
    assert TransientError.retriable and not GardaError.retriable
    assert all(issubclass(c, Rejected) for c in (NotFound, Forbidden, Conflict, Unacceptable))
    assert issubclass(ChildDied, StackError)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (Unauthorized("no token"), 401),
        (Forbidden("not your post"), 403),
        (NotFound("unknown case"), 404),
        (Conflict("already resolved"), 409),
        (Rejected("refused"), 409),
        (Unacceptable("note is required"), 422),
        (InvalidEvent("bad", field="data"), 422),
        (ConfigError("bad"), 500),
    ],
)
def test_http_status_is_decided_at_the_edge(exc: GardaError, status: int) -> None:
    assert http_status(exc) == status
    assert not hasattr(exc, "status")
