"""``GET /api/stream``: case changes as server-sent events, for the desk's live updates.

One :class:`CaseFeed` per worker process reads what changed in ``cases`` (by
``updated_at``) twice a second while anyone listens, and hands each change to every
listener whose scope may see the case. Any worker serves any listener: the feed reads the
shared database, not this worker's partitions.

Rules decided where the design is silent:
- ``updated_at`` is set when a batch's transaction starts, so a long batch can commit rows
  older than what the feed already saw; the feed re-reads the last ``OVERLAP`` and skips
  what it sent (by case id and ``updated_at``).
- A listener that falls behind (its queue is full), or a burst larger than one read, gets a
  ``resync`` event: the page reloads its list instead of trusting a partial stream.
- The stream re-checks its token or session every ``RECHECK`` seconds and ends with an
  ``ended`` event once it is revoked, expired or signed out.
- Events: ``hello`` (on connect), ``case`` (a case's public JSON), ``resync``, ``ended``;
  a comment line every ``PING`` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from faust.web import Request, Response

from handlers import access
from infra import queries
from infra.logging import safe_error
from infra.tokens import Scope
from streams.web.common import ApiView, log, resolve_scope, token_required

INTERVAL = 0.5  # seconds between reads of the cases table
OVERLAP = timedelta(seconds=10)
READ_LIMIT = 2000
QUEUE_SIZE = 1000
PING = 15.0
RECHECK = 30.0


@dataclass(eq=False)
class Listener:
    scope: Scope
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    behind: bool = False

    def offer(self, event: str, data: Any) -> None:
        if self.behind:
            return
        try:
            self.queue.put_nowait((event, data))
        except asyncio.QueueFull:
            self.behind = True


class CaseFeed:
    """Reads case changes while it has listeners; fans them out by scope."""

    def __init__(self, runtime: Any, interval: float = INTERVAL) -> None:
        self.runtime = runtime
        self.interval = interval
        self.listeners: set[Listener] = set()
        self.task: asyncio.Task[None] | None = None
        self.cursor: datetime | None = None
        self.sent: dict[str, datetime] = {}

    def subscribe(self, scope: Scope) -> Listener:
        listener = Listener(scope)
        self.listeners.add(listener)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run())
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    async def run(self) -> None:
        while self.listeners:
            try:
                await self.read_once()
            except Exception as exc:  # noqa: BLE001 - the feed outlives database hiccups
                log.warning("case feed read failed", error=safe_error(exc))
            await asyncio.sleep(self.interval)
        self.cursor = None
        self.sent.clear()

    async def read_once(self) -> None:
        async with self.runtime.db.pool.acquire() as conn:
            if self.cursor is None:
                self.cursor = await conn.fetchval("SELECT now()")
                return
            rows = await queries.changed_since(conn, self.cursor - OVERLAP, limit=READ_LIMIT)
        if len(rows) >= READ_LIMIT:
            for listener in list(self.listeners):
                listener.offer("resync", {})
        for updated_at, case in rows:
            if self.sent.get(case["case_id"]) == updated_at:
                continue
            self.sent[case["case_id"]] = updated_at
            for listener in list(self.listeners):
                if access.can_see_case_json(listener.scope, case, self.runtime.policy):
                    listener.offer("case", case)
        if rows:
            self.cursor = max(self.cursor, rows[-1][0])
        horizon = self.cursor - OVERLAP
        self.sent = {k: v for k, v in self.sent.items() if v >= horizon}


def feed_of(runtime: Any) -> CaseFeed:
    feed = getattr(runtime, "case_feed", None)
    if feed is None:
        feed = runtime.case_feed = CaseFeed(runtime)
    return feed


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()


class Stream(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        runtime = self.runtime
        feed = feed_of(runtime)
        listener = feed.subscribe(scope)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)  # type: ignore[arg-type]
            await response.write(b"retry: 2000\n\n" + sse("hello", {"token_id": scope.token_id}))
            last_write = last_check = time.monotonic()
            while runtime.running:
                try:
                    event, data = await asyncio.wait_for(listener.queue.get(), timeout=1.0)
                except TimeoutError:
                    event = None
                now = time.monotonic()
                if listener.behind:
                    listener.behind = False
                    while not listener.queue.empty():
                        listener.queue.get_nowait()
                    event, data = "resync", {}
                if event is not None:
                    await response.write(sse(event, data))
                    last_write = now
                elif now - last_write >= PING:
                    await response.write(b": ping\n\n")
                    last_write = now
                if now - last_check >= RECHECK:
                    last_check = now
                    try:
                        await resolve_scope(runtime, request)
                    except Exception:  # noqa: BLE001 - revoked, expired, or store down
                        await response.write(sse("ended", {}))
                        break
        except ConnectionResetError:
            pass  # the page went away
        finally:
            feed.unsubscribe(listener)
        return response  # type: ignore[return-value]


ROUTES = {"/api/stream": Stream}
