"""Alert delivery latency: alert committed → the receiver got the signed POST.

One real ``garda worker`` with a ``GARDA_RECEIVERS`` file naming one webhook receiver (an
aiohttp server in this process, verifying each signature with ``standardwebhooks``);
critical incidents for new workers at ``--rate``/s, each opening a case whose
``garda.case.opened`` is delivered. Per delivery: *committed* is ``hook_deliveries.created_at``
(the database clock in the batch transaction that raised the alert; an upper bound of the
latency, since the commit comes a little later), *received* the receiver's clock when the
request arrived (the same machine). Also reported: produce → received, end to end.

    python -m bench.hook_latency [--rate 20] [--seconds 10]
    python -m bench --only hooks
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bench.baselines import send_paced
from bench.common import Stack, log, percentiles
from bench.live import incidents, start_worker
from infra.processes import free_port
from schemas import topics

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Sink:
    """A webhook receiver: receive time per ``webhook-id`` (signatures verified)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: dict[str, float] = {}  # webhook-id -> time.time() at arrival
        self.subjects: dict[str, str] = {}  # webhook-id -> worker id (the incident's key)
        self.bad = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        try:
            Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:  # noqa: BLE001 - counted, answered 400
            self.bad += 1
            return web.Response(status=400)
        wid = request.headers["webhook-id"]
        self.got.setdefault(wid, at)
        self.subjects.setdefault(wid, str(json.loads(body).get("subject")))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def hook_latency(stack: Stack, *, rate: float, seconds: float) -> dict[str, Any]:
    sink = Sink()
    url = await sink.start()
    receivers = stack.tmp / "receivers.toml"
    receivers.write_text(
        f'[[receivers]]\nname = "bench"\nurl = "{url}"\nsecret = "{SECRET}"\n'
        '[receivers.match]\ntypes = ["garda.case.opened"]\n'
    )
    worker, db_url = await start_worker(stack, "hooks", GARDA_RECEIVERS=str(receivers))
    await worker.start(ready_timeout=120)
    result: dict[str, Any] = {"rate": rate}
    try:
        events = incidents(max(1, int(rate * seconds)), "hooks")
        log(f"hooks: {len(events)} critical incidents at {rate}/s, one delivery each")
        sent: dict[bytes, float] = {}
        topic_of = {topics.INCIDENTS: worker.settings.topic(topics.INCIDENTS)}
        await send_paced(stack.bootstrap, topic_of, events, rate, sent)
        deadline = time.monotonic() + 60
        while len(sink.got) < len(events) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch(
                "SELECT delivery_id, extract(epoch FROM created_at) AS committed"
                " FROM hook_deliveries"
            )
        finally:
            await conn.close()
        committed = {r["delivery_id"]: float(r["committed"]) for r in rows}
        to_receiver = [sink.got[d] - c for d, c in committed.items() if d in sink.got]
        end_to_end = [
            at - sent[sink.subjects[d].encode()]
            for d, at in sink.got.items()
            if sink.subjects[d].encode() in sent
        ]
        result["committed_to_received"] = percentiles(to_receiver)
        result["produced_to_received"] = percentiles(end_to_end)
        result.update(
            incidents=len(events),
            deliveries=len(committed),
            received=len(sink.got),
            bad_signatures=sink.bad,
        )
    finally:
        await worker.stop()
        await sink.stop()
        await stack.drop(db_url)
    return result


async def _main(rate: float, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="garda-bench-hooks-"))
    stack = await Stack.start(tmp)
    try:
        return await hook_latency(stack, rate=rate, seconds=seconds)
    finally:
        await stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hook_latency", description=__doc__)
    p.add_argument("--rate", type=float, default=20.0, help="critical incidents per second")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args.rate, args.seconds)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
