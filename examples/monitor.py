"""A monitoring consumer: a live feed of Garda's cases and alerts, and a verified webhook.

    python examples/monitor.py feed --bootstrap localhost:9092 [--prefix P] [--group G]
    python examples/monitor.py webhook --secret whsec_... [--port 8787]

``feed`` reads ``pmi.cases.v1`` and ``pmi.alerts.v1`` with its own consumer group (so it
never takes partitions from Garda's workers, and resumes where it stopped) and prints one
line per event. ``webhook`` is a small receiver for Garda's alerting hooks: it verifies each
POST with the ``standardwebhooks`` library (signature and timestamp), answers 401 to a bad
one, and dedupes on ``webhook-id``, so an alert retried by Garda is printed once.
Stdlib, aiokafka, aiohttp and standardwebhooks only: copy it and adapt it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOPICS = ("pmi.cases.v1", "pmi.alerts.v1")


def describe(event: dict[str, Any]) -> str:
    """One line for a Garda CloudEvent."""
    data = event.get("data") or {}
    parts = [event.get("time", "-"), event.get("type", "?"), f"subject={event.get('subject')}"]
    for key in ("case_id", "post_id", "severity", "status", "escalation_level", "source"):
        if key in data:
            parts.append(f"{key}={data[key]}")
    return " ".join(str(p) for p in parts)


async def feed(bootstrap: str, prefix: str, group: str, stop_after: float | None) -> None:
    consumer = AIOKafkaConsumer(
        *(prefix + t for t in TOPICS),
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    await consumer.start()
    print(f"monitor: reading {', '.join(TOPICS)} as group {group}", flush=True)
    loop = asyncio.get_running_loop()
    end = loop.time() + stop_after if stop_after else None
    try:
        while end is None or loop.time() < end:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    try:
                        line = describe(json.loads(r.value))
                    except (ValueError, TypeError):
                        line = f"(not a JSON CloudEvent at {r.topic}:{r.partition}:{r.offset})"
                    print(line, flush=True)
    finally:
        await consumer.stop()


def webhook_app(secret: str) -> web.Application:
    hook = Webhook(secret)
    seen: set[str] = set()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = hook.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            print(f"webhook: rejected ({exc})", flush=True)
            return web.Response(status=401, text="bad signature")
        msg_id = request.headers["webhook-id"]
        if msg_id in seen:
            return web.Response(status=200, text="duplicate")
        seen.add(msg_id)
        print(f"webhook: {describe(event)}", flush=True)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", receive)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("feed", help="print pmi.cases.v1 and pmi.alerts.v1 as they come")
    f.add_argument("--bootstrap", default="localhost:9092")
    f.add_argument("--prefix", default="", help="GARDA_TOPIC_PREFIX of the deployment")
    f.add_argument("--group", default="garda-monitor-example")
    f.add_argument("--seconds", type=float, default=None, help="stop after this long")
    w = sub.add_parser("webhook", help="receive and verify Garda's webhook deliveries")
    w.add_argument("--secret", required=True, help="the receiver's whsec_... secret")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=8787)
    args = p.parse_args(argv)
    if args.command == "feed":
        asyncio.run(feed(args.bootstrap, args.prefix, args.group, args.seconds))
    else:
        print(f"webhook: listening on http://{args.host}:{args.port}/", flush=True)
        web.run_app(webhook_app(args.secret), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
