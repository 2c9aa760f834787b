"""Wait for the database and the broker at start, with bounded, logged backoff.

A worker started before PostgreSQL or Kafka is up (a container start order, a database
restart) waits for them instead of dying with a traceback: each failed probe is logged as
one line (what is unreachable, the attempt, the error's class and message, never a
password), retried with exponential backoff and jitter (``stamina``), and after
``timeout`` seconds the worker gives up with :class:`errors.Unavailable`, which the CLI
prints as one sentence. Only retriable failures are waited for (``infra.faults``): a wrong
password or a missing database fails at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import stamina
from aiokafka import AIOKafkaClient

from errors import Unavailable
from infra.faults import is_retriable
from infra.logging import get_logger

log = get_logger("garda.readiness")


def _where(url: str) -> str:
    """host:port/db of a PostgreSQL URL, without user or password."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]


async def _probe_database(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def _probe_broker(bootstrap: str) -> None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
    finally:
        await client.close()


async def wait_for(
    what: str, where: str, probe: Callable[[], Awaitable[None]], *, timeout: float
) -> int:
    """Run ``probe`` until it succeeds; returns the number of attempts it took."""
    attempts = 0

    def retry_on(exc: BaseException) -> bool:
        if not is_retriable(exc):
            return False
        log.warning(
            f"{what} unreachable, retrying",
            where=where,
            attempt=attempts,
            error=f"{type(exc).__name__}: {exc}",
        )
        return True

    try:
        async for attempt in stamina.retry_context(
            on=retry_on, attempts=None, timeout=timeout, wait_initial=0.5, wait_max=5.0
        ):
            with attempt:
                attempts += 1
                await probe()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if is_retriable(exc):
            raise Unavailable(
                f"the {what} at {where} is still unreachable after {timeout:g} s ({reason})"
            ) from exc
        raise Unavailable(f"the {what} at {where} refused Garda: {reason}") from exc
    if attempts > 1:
        log.info(f"{what} reachable", where=where, attempts=attempts)
    return attempts


async def wait_for_stack(database_url: str, bootstrap: str, *, timeout: float) -> None:
    """Wait for PostgreSQL, then for the Kafka bootstrap servers."""
    await wait_for(
        "database", _where(database_url), lambda: _probe_database(database_url), timeout=timeout
    )
    await wait_for("broker", bootstrap, lambda: _probe_broker(bootstrap), timeout=timeout)
