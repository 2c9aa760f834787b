"""Shared fixtures.

Integration fixtures start the embedded broker and PostgreSQL lazily, once per session, and
only for tests that request them (directly or through another fixture); such tests are
marked ``integration`` automatically, so ``pytest -m "not integration"`` starts nothing.

Point the tests at existing servers with ``GARDA_TEST_KAFKA_BOOTSTRAP=host:port`` and
``GARDA_DATABASE_URL=postgresql://...`` (a superuser-ish URL: tests create databases).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from infra.settings import Settings

INTEGRATION_FIXTURES = frozenset(
    {"broker", "kafka_bootstrap", "pg_server", "database_url", "topics", "stack_settings"}
)
TEST_PARTITIONS = 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & INTEGRATION_FIXTURES or "/integration/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class ExternalBroker:
    """A broker we did not start (``GARDA_TEST_KAFKA_BOOTSTRAP``)."""

    bootstrap: str


@dataclass(frozen=True)
class ExternalPostgres:
    """A PostgreSQL server we did not start (``GARDA_DATABASE_URL``)."""

    url: str

    async def create_database(self, name: str) -> str:
        from infra.postgres import create_database

        return await create_database(self.url, name)

    async def drop_database(self, name: str) -> None:
        from infra.postgres import drop_database

        await drop_database(self.url, name)


@pytest.fixture(scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """Session broker: ``.bootstrap`` is "host:port" (EmbeddedBroker or ExternalBroker)."""
    external = os.environ.get("GARDA_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield ExternalBroker(external)
        return
    from infra.broker import EmbeddedBroker

    async with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: object) -> str:
    return broker.bootstrap  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[object]:
    """Session PostgreSQL: ``.url`` plus ``create_database(name)``/``drop_database(name)``."""
    external = os.environ.get("GARDA_DATABASE_URL")
    if external:
        yield ExternalPostgres(external)
        return
    from infra.postgres import EmbeddedPostgres

    async with EmbeddedPostgres(temporary=True, durable=False) as pg:
        yield pg


@pytest.fixture
async def database_url(pg_server: object) -> AsyncIterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = await pg_server.create_database(name)  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        await pg_server.drop_database(name)  # type: ignore[attr-defined]


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix, so tests sharing the broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    """All Garda topics created under ``topic_prefix``; returns the matching Settings
    (``kafka_bootstrap``, ``topic_prefix``, ``partitions``; ``settings.topic(name)``)."""
    from infra.kafka_admin import ensure_topics

    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=TEST_PARTITIONS,
        group_id=f"{topic_prefix}garda",
        session_timeout=6.0,
    )
    await ensure_topics(kafka_bootstrap, settings)
    return settings


@pytest.fixture
def stack_settings(topics: Settings, database_url: str) -> Settings:
    """Settings for a full run: the topics above plus a fresh database."""

    return topics.replace(database_url=database_url)
