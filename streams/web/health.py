"""``/health`` and ``/metrics``: open to anyone who can reach the port (bind it privately)."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response

from infra import queries
from streams.lag import partition_lag
from streams.web.common import ApiView


class Health(ApiView):
    async def get(self, request: Request) -> Response:
        runtime = self.runtime
        checks: dict[str, Any] = {}
        ok = True
        try:
            async with runtime.db.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            checks["database"] = f"error: {exc}"
            ok = False
        checks["broker"] = "ok" if broker_ok(runtime) else "unreachable"
        ok = ok and checks["broker"] == "ok"
        checks["lag"] = lag(self.app)
        checks["assigned"] = assigned(self.app)
        checks["status"] = "ok" if ok else "degraded"
        return self.reply(checks, status=200 if ok else 503)


class Metrics(ApiView):
    async def get(self, request: Request) -> Response:
        runtime = self.runtime
        async with runtime.db.pool.acquire() as conn:
            s = await queries.stats(conn)
        lines = [
            "# TYPE garda_events_total counter",
            *(
                f'garda_events_total{{outcome="{k}"}} {v}'
                for k, v in sorted(runtime.processor.totals.items())
            ),
            "# TYPE garda_deadletters_total counter",
            f"garda_deadletters_total {s['deadletters']}",
            "# HELP garda_processed_events processed input events (planner estimate)",
            "# TYPE garda_processed_events gauge",
            f"garda_processed_events {s['processed']}",
            "# TYPE garda_outbox_pending gauge",
            f"garda_outbox_pending {s['outbox_pending']}",
            "# TYPE garda_open_cases gauge",
            f"garda_open_cases {s['open_cases']}",
            "# TYPE garda_consumer_lag gauge",
            *(
                f'garda_consumer_lag{{topic="{k.rsplit(":", 1)[0]}",partition="{k.rsplit(":", 1)[1]}"}} {v}'
                for k, v in lag(self.app).items()
            ),
        ]
        return self.text("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")


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


def lag(app: Any) -> dict[str, int]:
    return {f"{t}:{p}": n for (t, p), n in partition_lag(app).items() if n is not None}


ROUTES = {"/health": Health, "/metrics": Metrics}
