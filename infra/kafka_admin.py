"""Topic administration: create Garda's topics idempotently (aiokafka admin client).

Tansu, measured: CreateTopics answers per-topic error codes rather than
raising, ``TOPIC_ALREADY_EXISTS`` (36) is normal on a second run, and compaction is
accepted as a config but not observed, so never rely on it in tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from errors import ConfigError, TransientError
from infra.settings import Settings
from schemas import topics

TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3


@dataclass(frozen=True)
class TopicSpec:
    name: str  # full name, prefix included
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def topic_specs(settings: Settings, replication_factor: int = 1) -> list[TopicSpec]:
    """Every Garda topic (``schemas.topics.ALL``) with its full name and config."""
    specs = []
    for logical in topics.ALL:
        configs = {"cleanup.policy": "compact" if logical in topics.COMPACTED else "delete"}
        specs.append(
            TopicSpec(settings.topic(logical), settings.partitions, replication_factor, configs)
        )
    return specs


async def ensure_topics(
    bootstrap: str,
    settings: Settings,
    *,
    replication_factor: int = 1,
    wait_seconds: float = 30.0,
) -> dict[str, int]:
    """Create any missing Garda topic; check existing ones. Returns ``{full name: partitions}``.

    Idempotent. Raises ConfigError if an existing topic has a different partition count,
    TransientError if the broker cannot be reached.
    """
    specs = topic_specs(settings, replication_factor)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        try:
            await asyncio.wait_for(admin.start(), wait_seconds)
        except (KafkaError, OSError, TimeoutError) as e:
            raise TransientError(f"cannot reach the Kafka broker at {bootstrap}: {e!r}") from e
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs)
                    for s in missing
                ],
                timeout_ms=int(wait_seconds * 1000),
            )
            errors = [
                (name, code, message)
                for name, code, message in response.topic_errors
                if code not in (0, TOPIC_ALREADY_EXISTS)  # a concurrent creator won the race
            ]
            if errors:
                detail = "; ".join(f"{n}: error {c} {m or ''}".strip() for n, c, m in errors)
                raise ConfigError(f"could not create topics: {detail}")
        counts = await _partition_counts(admin, [s.name for s in specs], wait_seconds)
    finally:
        await admin.close()

    for s in specs:
        have = counts.get(s.name)
        if have is None:
            raise TransientError(f"topic {s.name} not visible in metadata after creation")
        if have != s.partitions:
            raise ConfigError(
                f"topic {s.name} exists with {have} partitions but GARDA_PARTITIONS="
                f"{s.partitions}; use the existing count or another GARDA_TOPIC_PREFIX"
            )
    return counts


async def _partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], wait_seconds: float
) -> dict[str, int]:
    """Partition counts from topic metadata, retried briefly while new topics propagate."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        described = await admin.describe_topics(names)
        counts = {
            d["topic"]: len(d["partitions"])
            for d in described
            if d["error_code"] == 0 and d["partitions"]
        }
        if len(counts) == len(names) or asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.1)
