"""The Faust app: one agent that processes every input topic in batches, and the timers.

Input topics are consumed as raw bytes (no payload can crash the agent) and handed in batches
to ``BatchProcessor``; the offsets of a batch are released for commit only after its
PostgreSQL transaction committed. Output events go out through the outbox relay (its
background publisher, while the agent processes the next batch).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import faust
from mode import Service, ServiceT

from handlers.policy import Policy
from infra import metrics
from infra.db import Database, migrate
from infra.hooks.dispatcher import Dispatcher
from infra.hooks.enqueue import Hooks
from infra.hooks.policy import hooks_policy
from infra.hooks.receivers import load_receivers
from infra.logging import get_logger, safe_error
from infra.outbox import OutboxRelay
from infra.retention import PruneReport, prune
from infra.settings import Settings
from schemas import topics
from streams.lag import partition_lag
from streams.processor import BatchProcessor, RawRecord
from streams.source_watch import SourceWatch, caught_up
from streams.timers import DeadlineTimer
from streams.transport import FastFetchTransport
from streams.web.ratelimit import AUDIT_EVERY, FailureLimiter

log = get_logger("garda.streams")


class Runtime(Service):
    """What the agents and views share: settings, policy, database, processor, relay.

    A ``mode`` service (Faust's own service library). ``start()``: the pool opens and the
    migrations run (``on_start``), then the outbox relay starts (a dependency), then the
    hooks dispatcher (``on_started``). ``stop()`` undoes it in reverse: the dispatcher
    (``on_stop``), the relay, the pool last (``on_shutdown``). The Faust app starts it first
    thing (``GardaApp.on_first_start``: before its consumer, so no batch meets an
    unmigrated database) and stops it after itself. Timers and views ask ``running``.
    """

    def __init__(self, settings: Settings, policy: Policy) -> None:
        if not settings.database_url:
            raise ValueError("settings.database_url is required")
        super().__init__()
        self.settings = settings
        self.policy = policy
        self.db = Database(settings.database_url, max_size=10)
        self.relay = OutboxRelay(self.db, settings.kafka_bootstrap)
        self.processor = BatchProcessor(self.db, settings, policy)
        self.deadlines = DeadlineTimer(self)
        self.sources = SourceWatch(self)
        # Alerting hooks: receivers and the [hooks] policy are validated here, at start.
        self.hooks = Hooks(
            load_receivers(settings.receivers),
            hooks_policy(policy),
            topic_prefix=settings.topic_prefix,
        )
        self.processor.hooks = self.hooks
        self.dispatcher = Dispatcher(
            self.db,
            self.hooks,
            public_url=settings.public_base_url,
            headquarters=policy.headquarters,
        )
        self.limiter = FailureLimiter(settings.failed_requests_per_minute)

    def on_init_dependencies(self) -> list[ServiceT]:
        return [self.relay]

    async def on_start(self) -> None:
        await self.db.start()
        async with self.db.pool.acquire() as conn:
            await migrate(conn)

    async def on_started(self) -> None:
        await self.dispatcher.start()

    async def on_stop(self) -> None:
        await self.dispatcher.stop()

    async def on_shutdown(self) -> None:
        await self.db.stop()

    @property
    def running(self) -> bool:
        """Started and neither stopping nor crashed (the app's timers and views start only
        after ``start()`` has returned, so started means ready for them)."""
        return self.started and not self.should_stop

    async def prune(self) -> PruneReport:
        """Prune the operational tables now (skipped if another worker is pruning)."""
        async with self.db.pool.acquire() as conn:
            report = await prune(conn, self.policy.retention, pause=0.05)
        for t in report.tables:
            if t.deleted:
                metrics.PRUNED.labels(t.table).inc(t.deleted)
        if report.deleted:
            log.info("pruned", **{t.table: t.deleted for t in report.tables})
        return report


class GardaApp(faust.App):
    """faust.App with Garda's runtime attached and the fast-fetch transport."""

    runtime: Runtime
    fetch_max_wait_ms: int = 100
    logger = logging.getLogger("faust.app")  # Faust's records keep Faust's logger name

    def _new_transport(self) -> Any:
        return FastFetchTransport(self.conf.broker_consumer, self, loop=self.loop)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        await self.runtime.start()

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.runtime.stop()


METADATA_MAX_AGE_MS = 15_000  # see create_app
ACTIONS_WAIT = 30.0  # seconds a deadline scan may wait for a partition's pending case actions


def _hold_back(events: list[Any]) -> None:
    """Keep these events' offsets from ever being committed (their batch did not finish).

    Faust acks a ``take_events`` batch in a ``finally`` block, even when the body was
    cancelled; marking the messages acked first keeps their offsets out of the commit, so
    the next owner of the partition reads them again.
    """
    for event in events:
        event.message.acked = True


def create_app(settings: Settings, policy: Policy) -> GardaApp:
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = GardaApp(
        settings.group_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Faust's own assignor keeps partition N of every input topic on one worker
        # (co-partitioning); Faust uses it only when standby replicas > 0 or tables exist.
        table_standby_replicas=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=settings.session_timeout,
        broker_request_timeout=max(30.0, settings.session_timeout * 3),
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_size,
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
        producer_linger=0.005,
        # Kafka clients refresh cluster metadata every 5 minutes by default; after the cluster
        # behind the bootstrap address changed (a broker restarted empty, a topic recreated)
        # the consumer fetched nothing until then, and every deadline waited that long.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        producer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        datadir=str(settings.data_dir / "faust"),
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.runtime = Runtime(settings, policy)
    runtime = app.runtime

    inputs = app.topic(
        *[settings.topic(t) for t in topics.INPUTS],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(inputs, name="garda.process")
    async def process(stream: faust.StreamT) -> None:
        # take_events is on faust.Stream, which Faust passes; StreamT does not declare it.
        async for events in cast(faust.Stream, stream).take_events(
            settings.batch_size, settings.batch_within
        ):
            finished = False
            try:
                records = [
                    RawRecord(
                        topic=e.message.topic,
                        partition=e.message.partition,
                        offset=e.message.offset,
                        key=e.message.key,
                        value=e.message.value,
                        headers=_headers(e.message.headers),
                        timestamp=e.message.timestamp,
                    )
                    for e in events
                ]
                report = await runtime.processor.process(records)
                finished = True
            finally:
                if not finished:
                    _hold_back(list(events))
            # published (from memory) while the next batch runs
            runtime.relay.publish_later(report.outbox_seqs, report.outbox_rows)

    @app.timer(2.0)
    async def sweep_outbox() -> None:
        if not runtime.running:
            return
        try:
            await runtime.relay.sweep()
        except Exception as exc:  # noqa: BLE001 - a timer must survive outages; next tick retries
            log.warning("outbox sweep failed", error=safe_error(exc))

    input_names = {settings.topic(t) for t in topics.INPUTS}
    actions_topic = settings.topic(topics.CASE_ACTIONS)
    behind_since: dict[int, float] = {}
    logged_waiting: set[int] = set()

    @app.timer(settings.timer_interval)
    async def watch_sources() -> None:
        if not runtime.running or not policy.sources:
            return
        if not caught_up(partition_lag(app), settings.batch_size):
            return  # read the backlog first: an event in it may end a silence
        try:
            await runtime.sources.check()
        except Exception as exc:  # noqa: BLE001 - a timer must survive outages; next tick retries
            log.warning("source check failed", error=repr(exc))

    def deadline_partitions() -> set[int]:
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic in input_names}
        # A partition with responders' actions not yet handled (after a restart or an outage)
        # waits: an acknowledgement in that backlog must count before its deadline does. It
        # waits at most ACTIONS_WAIT seconds, so steady action traffic cannot starve it.
        now = time.monotonic()
        behind = {p for (t, p), n in partition_lag(app).items() if t == actions_topic and n != 0}
        for p in list(behind_since):
            if p not in behind:
                del behind_since[p]
        waiting = {p for p in behind if now - behind_since.setdefault(p, now) < ACTIONS_WAIT}
        if waiting & owned and waiting & owned != logged_waiting:  # once per change
            log.info("deadline scan waits for pending case actions", partitions=sorted(waiting))
        logged_waiting.clear()
        logged_waiting.update(waiting & owned)
        return owned - waiting

    @app.task(traced=False)
    async def fire_deadlines() -> None:
        # Scans when a deadline falls due, when the partitions change, and at least every
        # timer interval (streams.timers); survives outages itself.
        await runtime.deadlines.run(
            deadline_partitions, settings.timer_interval, rebalancing=lambda: app.rebalancing
        )

    @app.timer(AUDIT_EVERY)
    async def audit_rate_limited() -> None:
        if not runtime.running:
            return
        try:
            await runtime.limiter.flush(runtime)
        except Exception as exc:  # noqa: BLE001 - a timer must survive outages; next tick retries
            log.warning("rate-limit audit failed", error=safe_error(exc))

    @app.timer(policy.retention.interval.total_seconds())
    async def prune_old_rows() -> None:
        if not runtime.running:
            return
        try:
            await runtime.prune()
        except Exception as exc:  # noqa: BLE001 - a timer must survive outages; next tick retries
            log.warning("prune failed", error=safe_error(exc))

    from streams import web

    web.register(app)
    return app


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]
