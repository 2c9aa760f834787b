"""``/health`` and ``/metrics`` (design §6): open to anyone who can reach the port (bind it
privately).

Rules decided where the design is silent:
- ``/health`` is 503 when any dependency fails, and ``failing`` names each one:
  ``database`` (no answer to ``SELECT 1`` within 2 s), ``broker`` (the producer knows no
  broker), ``consumer`` (no input partition assigned: a worker outside the group handles
  nothing). Lag is reported, never judged: a backlog is an alert (Prometheus rules), not a
  reason for a load balancer to drop the API.
- ``/metrics`` still answers when the database is down: the per-process series are served
  and ``garda_db_up`` is 0 (the ``garda_db_*`` gauges are then absent, not zero). What each
  series means and how to add several workers up: ``infra/metrics.py`` and
  ``docs/monitoring.md``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.web import Request, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra import metrics, queries
from infra.logging import get_logger, safe_error
from streams.lag import partition_lag
from streams.web.common import ApiView

log = get_logger("garda.api.health")


class Health(ApiView):
    async def get(self, request: Request) -> Response:
        body, status = await health(self.app)
        return self.reply(body, status=status)


class Metrics(ApiView):
    async def get(self, request: Request) -> Response:
        body = await metrics_text(self.app)
        return self.bytes(body, headers={"Content-Type": metrics.CONTENT_TYPE})


DB_TIMEOUT = 2.0  # seconds a health or metrics query may take


async def health(app: Any) -> tuple[dict[str, Any], int]:
    """The /health body and its HTTP status (200 or 503)."""
    runtime = app.runtime
    checks: dict[str, Any] = {}
    failing: list[str] = []
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            async with runtime.db.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - health reports, never raises
        checks["database"] = f"error: {safe_error(exc)}"
        failing.append("database")
    if broker_ok(runtime):
        checks["broker"] = "ok"
    else:
        checks["broker"] = "unreachable"
        failing.append("broker")
    checks["assigned"] = assigned(app)
    if not checks["assigned"]:
        checks["consumer"] = "no partition assigned"
        failing.append("consumer")
    else:
        checks["consumer"] = "ok"
    checks["lag"] = {f"{t}:{p}": n for (t, p), n in partition_lag(app).items() if n is not None}
    checks["failing"] = failing
    checks["status"] = "ok" if not failing else "degraded"
    return checks, 200 if not failing else 503


async def metrics_text(app: Any) -> bytes:
    """The Prometheus exposition text of this worker."""
    runtime = app.runtime
    collectors: list[Collector] = [live_gauges(app)]
    up = GaugeMetricFamily(
        "garda_db_up", "1 when the database answered this scrape's queries, else 0."
    )
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            async with runtime.db.pool.acquire() as conn:
                snapshot = await queries.monitoring_snapshot(conn, runtime.policy)
        collectors.append(metrics.DatabaseCollector(snapshot))
        up.add_metric([], 1)
    except Exception as exc:  # noqa: BLE001 - the per-process series are still served
        log.warning("metrics: database snapshot failed", error=safe_error(exc))
        up.add_metric([], 0)
    collectors.append(_Static([up]))
    return metrics.render(*collectors)


def live_gauges(app: Any) -> metrics.LiveGauges:
    logical = app.runtime.processor.logical_topic
    lag = {(logical(t), p): n for (t, p), n in partition_lag(app).items()}
    return metrics.LiveGauges(lag, assigned(app))


class _Static(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self.families


def broker_ok(runtime: Any) -> bool:
    producer = runtime.relay._producer
    if producer is None:
        return False
    try:
        return bool(producer.client.cluster.brokers())
    except Exception:  # noqa: BLE001
        return False


def assigned(app: Any) -> int:
    """How many input-topic partitions this worker holds (0 until the group has formed)."""
    try:
        return len(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - not started yet
        return 0


ROUTES = {"/health": Health, "/metrics": Metrics}
