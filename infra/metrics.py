"""Prometheus metrics (design §6 ``/metrics``), through ``prometheus_client``.

Two kinds, kept apart so that adding several workers up stays right:

- **Per-process counters and histograms** (``garda_events_total``, ``garda_deadletters_total``,
  ``garda_escalations_total``, ``garda_escalation_lateness_seconds``,
  ``garda_deliveries_total``, ``garda_delivery_latency_seconds``, ...): what *this* process
  did since it started. They live in ``prometheus_client``'s default registry (with its
  ``process_*``/``python_*`` collectors) and are summed across workers:
  ``sum without (instance) (rate(garda_events_total[5m]))``.
- **Per-process gauges of the live consumer** (``garda_consumer_lag``,
  ``garda_consumer_assigned_partitions``): each worker reports only the partitions it holds;
  partitions are disjoint, so a sum over workers is the group's lag.
- **Database-wide gauges** (every name starts with ``garda_db_``): the same value whichever
  worker is scraped (open cases by post and severity, outbox backlog, processed events,
  source silence). Read from PostgreSQL at scrape time into a ``DatabaseSnapshot``; never
  sum them over workers: take ``max without (instance) (garda_db_cases_open)``.

Rules decided where the design is silent:
- Label values come from closed sets only (logical topic names, known event types,
  processor outcomes, receiver names from config), so a hostile producer cannot blow up the
  series count: an event type Garda does not know is counted as ``type="unknown"``.
- Counters count what committed: the processor increments them after its transaction.
- The delivery metrics are defined here and incremented by the webhook dispatcher
  (``record_delivery``); outcome is one of ``DELIVERY_OUTCOMES``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.types import list_types

# -- per-process counters (default registry) -------------------------------------------------

EVENTS = Counter(
    "garda_events",
    "Input events handled by this process, by logical topic, event type and outcome.",
    ["topic", "type", "outcome"],
)
DEADLETTERS = Counter(
    "garda_deadletters",
    "Inputs this process dead-lettered, by logical topic and reason class"
    " (invalid, rejected, error).",
    ["topic", "reason"],
)
ESCALATIONS = Counter(
    "garda_escalations",
    "Case escalations this process applied, by escalation level (1 head of mission, 2 HQ).",
    ["level"],
)
ESCALATION_LATENESS = Histogram(
    "garda_escalation_lateness_seconds",
    "How late an escalation was applied after its missed deadline.",
    buckets=(0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
)
ALERTS = Counter(
    "garda_alerts",
    "Alerts this process raised on pmi.alerts.v1 (committed to the outbox), by alert type.",
    ["alert"],
)
OUTBOX_PUBLISHED = Counter(
    "garda_outbox_published",
    "Outbox rows this process published to Kafka.",
)
OUTBOX_PARKED = Counter(
    "garda_outbox_parked",
    "Outbox rows this process parked because the broker refused them for good.",
)
HTTP_RATE_LIMITED = Counter(
    "garda_http_rate_limited",
    "API requests this process refused with 429: their client had too many failed requests.",
)
PRUNED = Counter(
    "garda_pruned_rows",
    "Rows this process deleted by retention (garda prune and the prune timer), by table.",
    ["table"],
)
# delivered: 2xx; failed: an attempt failed and will be retried; expired: given up after the
# retry horizon; disabled: the receiver answered 410; held / silenced: not sent (inhibited,
# silenced) and recorded.
DELIVERY_OUTCOMES = ("delivered", "failed", "expired", "disabled", "held", "silenced")
DELIVERIES = Counter(
    "garda_deliveries",
    "Webhook delivery attempts made by this process, by receiver and outcome"
    f" ({', '.join(DELIVERY_OUTCOMES)}).",
    ["receiver", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "garda_delivery_latency_seconds",
    "From the alert's commit to the receiver's 2xx answer, by receiver.",
    ["receiver"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600),
)

_KNOWN_TYPES = frozenset(list_types())


def event_type_label(type_: str | None) -> str:
    """The ``type`` label for an event: its type if Garda knows it, else ``unknown``."""
    return type_ if type_ in _KNOWN_TYPES else "unknown"


def record_events(counts: Iterable[tuple[tuple[str, str, str], int]]) -> None:
    """Add ((topic, type, outcome), n) pairs to ``garda_events_total``."""
    for (topic, type_, outcome), n in counts:
        EVENTS.labels(topic, event_type_label(type_), outcome).inc(n)


def record_escalation(level: int, missed_deadline: datetime | None, now: datetime) -> None:
    ESCALATIONS.labels(str(level)).inc()
    if missed_deadline is not None:
        ESCALATION_LATENESS.observe(max(0.0, (now - missed_deadline).total_seconds()))


def record_delivery(receiver: str, outcome: str, latency: float | None = None) -> None:
    """One delivery attempt: ``outcome`` in ``DELIVERY_OUTCOMES``; ``latency`` in seconds
    from the alert's commit, given when the receiver accepted it."""
    if outcome not in DELIVERY_OUTCOMES:
        raise ValueError(f"unknown delivery outcome {outcome!r}")
    DELIVERIES.labels(receiver, outcome).inc()
    if latency is not None:
        DELIVERY_LATENCY.labels(receiver).observe(max(0.0, latency))


# -- database-wide gauges (custom collector, built per scrape) -------------------------------


@dataclass(frozen=True)
class SourceStatus:
    """One expected producer as the database sees it (``garda_db_source_*``)."""

    source: str
    last_seen_at: datetime | None
    watched_since: datetime
    silent: bool


@dataclass
class DatabaseSnapshot:
    """What the ``garda_db_*`` gauges show; read from PostgreSQL at scrape time."""

    cases_open: dict[tuple[str, str], int] = field(default_factory=dict)  # (post, severity)
    outbox_backlog: int = 0
    outbox_oldest: datetime | None = None
    outbox_parked: int = 0
    processed_events: int = 0
    deadletters: int = 0
    deadlines_due: int = 0  # cases whose next escalation deadline has passed
    oldest_due: datetime | None = None  # the earliest of those deadlines
    sources: Sequence[SourceStatus] = ()
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class DatabaseCollector(Collector):
    """The ``garda_db_*`` gauges of one snapshot."""

    def __init__(self, snapshot: DatabaseSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        s = self.snapshot
        cases = GaugeMetricFamily(
            "garda_db_cases_open",
            "Cases not resolved, by post and severity (database-wide: do not sum over workers).",
            labels=["post_id", "severity"],
        )
        for (post, sev), n in sorted(s.cases_open.items()):
            cases.add_metric([post, sev], n)
        yield cases
        yield GaugeMetricFamily(
            "garda_db_outbox_backlog",
            "Output events committed but not yet published (database-wide).",
            value=s.outbox_backlog,
        )
        age = (s.taken_at - s.outbox_oldest).total_seconds() if s.outbox_oldest else 0.0
        yield GaugeMetricFamily(
            "garda_db_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row; 0 when the outbox is empty.",
            value=max(0.0, age),
        )
        yield GaugeMetricFamily(
            "garda_db_outbox_parked",
            "Outbox rows the broker refused for good: never retried, see outbox.park_reason"
            " (database-wide).",
            value=s.outbox_parked,
        )
        yield GaugeMetricFamily(
            "garda_db_processed_events",
            "Input events recorded as processed (planner estimate; database-wide).",
            value=s.processed_events,
        )
        yield GaugeMetricFamily(
            "garda_db_deadletters",
            "Dead letters recorded (database-wide).",
            value=s.deadletters,
        )
        yield GaugeMetricFamily(
            "garda_db_deadlines_due",
            "Cases whose next escalation deadline has passed and is not applied yet.",
            value=s.deadlines_due,
        )
        overdue = (s.taken_at - s.oldest_due).total_seconds() if s.oldest_due else 0.0
        yield GaugeMetricFamily(
            "garda_db_deadline_overdue_seconds",
            "How long the oldest passed, not yet applied escalation deadline is overdue;"
            " 0 when none is.",
            value=max(0.0, overdue),
        )
        silence = GaugeMetricFamily(
            "garda_db_source_silence_seconds",
            "Seconds since an expected source (policy [[sources]]) last spoke, or since it is"
            " watched when it never did.",
            labels=["source"],
        )
        silent = GaugeMetricFamily(
            "garda_db_source_silent",
            "1 while a source-silent alert is open for the source (database-wide).",
            labels=["source"],
        )
        for src in s.sources:
            since = src.last_seen_at or src.watched_since
            silence.add_metric([src.source], max(0.0, (s.taken_at - since).total_seconds()))
            silent.add_metric([src.source], 1.0 if src.silent else 0.0)
        yield silence
        yield silent


class LiveGauges(Collector):
    """Per-process gauges computed at scrape time (consumer lag and assignment)."""

    def __init__(self, lag: dict[tuple[str, int], int | None], assigned: int) -> None:
        self.lag = lag
        self.assigned = assigned

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "garda_consumer_lag",
            "Records not yet handled, per input partition this process holds (from the fetch"
            " high-water mark; partitions are disjoint, so summing over workers is right).",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(self.lag.items()):
            if n is not None:
                lag.add_metric([topic, str(partition)], n)
        yield lag
        yield GaugeMetricFamily(
            "garda_consumer_assigned_partitions",
            "Input partitions this process holds (0 until the consumer group has formed).",
            value=self.assigned,
        )


def render(*collectors: Collector, registry: CollectorRegistry = REGISTRY) -> bytes:
    """The exposition text: the per-process registry, then the scrape-time collectors."""
    extra = CollectorRegistry(auto_describe=False)
    for c in collectors:
        extra.register(c)
    return generate_latest(registry) + generate_latest(extra)


CONTENT_TYPE = CONTENT_TYPE_LATEST
