"""The embedded stack: broker, topics, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from errors import ConfigError, StackError
from infra.broker import EmbeddedBroker
from infra.kafka_admin import ensure_topics
from infra.postgres import EmbeddedPostgres
from infra.settings import Settings
from schemas import topics as t


async def test_broker_accepts_kafka_clients(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert host and int(port) > 0
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert isinstance(await admin.list_topics(), list)
    finally:
        await admin.close()


async def test_topics_created_with_partition_count(topics: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.kafka_bootstrap)
    await admin.start()
    try:
        names = [topics.topic(n) for n in t.ALL]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    assert counts == {n: topics.partitions for n in names}


async def test_ensure_topics_is_idempotent(topics: Settings) -> None:
    again = await ensure_topics(topics.kafka_bootstrap, topics)
    assert again == {topics.topic(n): topics.partitions for n in t.ALL}


async def test_ensure_topics_rejects_other_partition_count(topics: Settings) -> None:
    with pytest.raises(ConfigError, match="partitions"):
        await ensure_topics(
            topics.kafka_bootstrap, topics.replace(partitions=topics.partitions + 1)
        )


async def test_produce_consume_round_trip(topics: Settings) -> None:
    topic = topics.topic(t.DEPARTURES)
    producer = AIOKafkaProducer(bootstrap_servers=topics.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b'{"hello": 1}', key=b"w-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.kafka_bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        msg = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert (msg.key, msg.value) == (b"w-1", b'{"hello": 1}')


async def test_database_fixture_gives_working_connection(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == database_url.rsplit("/", 1)[1]
        await conn.execute("CREATE TABLE x (id int primary key)")
        await conn.execute("INSERT INTO x VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM x") == 1
    finally:
        await conn.close()


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    """A data dir the unprivileged PostgreSQL user can reach when we run as root
    (pytest's tmp_path lives under a 0700 directory)."""
    root = Path(tempfile.mkdtemp(prefix="garda-test-pg-"))
    root.chmod(0o755)
    try:
        yield root / "pg"
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_postgres_reuses_data_dir(pg_dir: Path) -> None:
    data = pg_dir
    pg = EmbeddedPostgres(data, durable=False)
    async with pg:
        assert pg.initdb_seconds is not None
        url = await pg.create_database("kept")
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE kept_rows (v text); INSERT INTO kept_rows VALUES ('x')")
        await conn.close()
    assert not (data / "postmaster.pid").exists()

    pg2 = EmbeddedPostgres(data, durable=False)
    async with pg2:
        assert pg2.initdb_seconds is None  # no second initdb
        conn = await asyncpg.connect(await pg2.create_database("kept"))
        try:
            assert await conn.fetchval("SELECT v FROM kept_rows") == "x"
        finally:
            await conn.close()


def _without_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://postgres@{rest.rsplit('@', 1)[1]}"


async def test_postgres_lets_nobody_in_without_its_password(
    pg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(pg_dir.parent / "no-passfile"))
    async with EmbeddedPostgres(pg_dir, durable=False) as pg:
        assert (pg.password_file.stat().st_mode & 0o777) == 0o600
        assert len(pg.password) >= 24
        assert "trust" not in (pg_dir / "pg_hba.conf").read_text()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(_without_password(pg.url))
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(_without_password(pg.url).replace("@", ":guess@"))
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SELECT current_user") == "postgres"
        await conn.close()


async def test_postgres_gives_an_old_trust_cluster_a_password(
    pg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(pg_dir.parent / "no-passfile"))
    async with EmbeddedPostgres(pg_dir, durable=False) as pg:
        old_password = pg.password
    # What an older Garda left: trust for everyone, no password file.
    (pg_dir / "garda-password").unlink()
    (pg_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    async with EmbeddedPostgres(pg_dir, durable=False) as pg:
        assert pg.password != old_password
        assert (pg.password_file.stat().st_mode & 0o777) == 0o600
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(_without_password(pg.url))
        conn = await asyncpg.connect(pg.url)
        await conn.close()


@pytest.mark.parametrize("stale_pid", [999_999, os.getpid()], ids=["dead", "reused"])
async def test_postgres_ignores_stale_pid_file(pg_dir: Path, stale_pid: int) -> None:
    data = pg_dir
    async with EmbeddedPostgres(data, durable=False):
        pass
    # A crash leaves postmaster.pid behind; its pid is dead or now someone else's.
    (data / "postmaster.pid").write_text(f"{stale_pid}\n{data}\n0\n1\n\n\n\nready\n")
    async with EmbeddedPostgres(data, durable=False) as pg:
        conn = await asyncpg.connect(pg.url)
        await conn.close()


async def test_postgres_stops_orphaned_server(pg_dir: Path) -> None:
    orphan = await EmbeddedPostgres(pg_dir, durable=False).start()
    orphan_proc, orphan._proc = orphan._proc, None  # as if its owner had been killed
    assert orphan_proc is not None and orphan_proc.poll() is None
    async with EmbeddedPostgres(pg_dir, durable=False) as pg:
        assert orphan_proc.wait(5) == 0  # shut down cleanly by the new owner
        conn = await asyncpg.connect(pg.url)
        await conn.close()


async def test_broker_start_stop_and_failure(tmp_path: Path) -> None:
    t0 = time.monotonic()
    async with EmbeddedBroker(tmp_path) as b:
        assert b.running and b.bootstrap.startswith("127.0.0.1:")
    assert not b.running
    assert time.monotonic() - t0 < 10
    assert (tmp_path / "broker.log").read_text()

    with pytest.raises(StackError, match="exited during start"):
        await EmbeddedBroker(tmp_path, binary="/bin/false").start()
