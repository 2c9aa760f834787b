"""The Faust app: the runtime, the two processing lanes and the periodic tasks.

Input topics are consumed as raw bytes (no payload can crash a lane) by two lanes, the
urgent and the bulk lane (``streams.lanes``: tasks fed a whole fetch at a time by the
consumer), and handed in batches to ``BatchProcessor``;
the offsets of a batch are released for commit only after its PostgreSQL transaction
committed. Output events go out through the outbox relay (its background publisher, while
the lane processes the next batch). The timers are in ``streams.periodic``.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from mode import Service, ServiceT

from handlers.policy import Policy
from infra import metrics
from infra.db import Database, migrate
from infra.hooks.dispatcher import Dispatcher
from infra.hooks.enqueue import Hooks
from infra.hooks.policy import hooks_policy
from infra.hooks.receivers import load_receivers
from infra.logging import get_logger
from infra.outbox import OutboxRelay
from infra.queries import CaseJson
from infra.retention import PruneReport, prune
from infra.settings import Settings
from infra.tokens import ScopeCache
from streams.lanes import URGENT_TOPICS, UrgentFirst, register_lanes
from streams.periodic import DeadlinePartitions, register_periodic
from streams.processor import BatchProcessor
from streams.source_watch import SourceWatch
from streams.timers import DeadlineTimer
from streams.transport import FastFetchTransport
from streams.web.ratelimit import FailureLimiter

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
        self.tokens = ScopeCache()  # bearer tokens' scopes (streams.web.common)
        self.case_json = CaseJson()  # listed cases' API JSON (streams.web.reads)

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
    urgent_topics: frozenset[str] = frozenset()  # their records are handed out first
    lanes: UrgentFirst
    deadline_partitions: DeadlinePartitions
    fetch_max_wait_ms: int = 25
    logger = logging.getLogger("faust.app")  # Faust's records keep Faust's logger name

    def _new_transport(self) -> Any:
        return FastFetchTransport(self.conf.broker_consumer, self, loop=self.loop)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        await self.runtime.start()

    async def on_stop(self) -> None:
        # A worker that stops (SIGTERM) scans and processes nothing from here on, while its
        # partitions stay assigned to it until the group notices it left: for an operator
        # (and the rebalance benchmark) they are in motion from now, not from the revocation.
        self._log_partitions("partitions released")
        await super().on_stop()
        await self.runtime.stop()

    def _log_partitions(self, event: str) -> None:
        consumer = self._consumer  # not self.consumer: that would create one while stopping
        try:
            held = consumer.assignment() if consumer is not None else set()
        except Exception:  # noqa: BLE001 - a consumer not started yet
            held = set()
        log.info(
            event,
            partitions=sorted({tp.partition for tp in held}),
            generation=self.consumer_generation_id,
        )

    def on_rebalance_start(self) -> None:
        # Logged here, the moment the consumer learns of the rebalance (the deadline scan
        # stops then), not by Faust's on_partitions_revoked signal, which comes only after the
        # batch in progress ended and the producer flushed. Eager rebalancing: every
        # partition this worker holds is revoked, whatever the new assignment keeps.
        super().on_rebalance_start()
        self._log_partitions("partitions revoked")


def _log_assigned(app: GardaApp) -> None:
    """Log each assignment (an operator sees where the partitions went, the rebalance
    benchmark dates the rebalances by these lines): partition numbers (the same on every
    input topic, co-partitioned) and the group generation, nothing else."""

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        log.info(
            "partitions assigned",
            partitions=sorted({tp.partition for tp in args[0]}),
            generation=app.consumer_generation_id,
        )


METADATA_MAX_AGE_MS = 15_000  # see faust_app
FETCH_BYTES_PER_PARTITION = 128 * 1024  # see faust_app


def faust_app(settings: Settings) -> GardaApp:
    """The Faust app with Garda's consumer, producer and web settings (no agents yet)."""
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
        # Per partition and fetch (Faust's default: 1 MB). One fetch request serves every
        # partition of the broker and the next waits until the last one was handed out, so
        # under a claims backlog megabytes of claims per round delayed the incidents fetched
        # with them. The broker still returns a larger record whole (KIP-74; Tansu too).
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
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
    return app


def create_app(settings: Settings, policy: Policy) -> GardaApp:
    """The worker: the Faust app, its runtime, the two lanes, the periodic tasks, the web."""
    app = faust_app(settings)
    app.runtime = Runtime(settings, policy)
    app.urgent_topics = frozenset(settings.topic(t) for t in URGENT_TOPICS)
    app.lanes = register_lanes(app, app.runtime)
    app.deadline_partitions = register_periodic(app, app.runtime)
    _log_assigned(app)

    from streams import web

    web.register(app)
    return app
