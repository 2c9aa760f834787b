"""Rate limit of failed API requests, per client, so one client cannot flood the audit log.

Every ``/api/...`` request (and the desk sign-in) goes through
:func:`streams.web.common.rate_limited` (part of ``token_required``), which asks
:class:`FailureLimiter` first. A request that fails on the client's side (any 4xx answer:
no or bad token, invalid event, unknown case, refused action) costs its client one unit of
``GARDA_FAILED_REQUESTS_PER_MINUTE`` (moving one-minute window). A client with nothing left
gets ``429 Too Many Requests`` with ``Retry-After`` (seconds until its oldest failure leaves
the window) for *every* API request, before any token check or database work.

Rules decided where the design is silent:
- The client is the TCP peer address (``request.remote``). ``X-Forwarded-For`` is not
  trusted: anyone can write it. Behind a reverse proxy every client shares the proxy's
  address, so rate-limit at the proxy and raise (or turn off, ``0``) Garda's limit.
- Successful requests (2xx) and Garda's own failures (5xx: a database or broker outage)
  cost nothing, so valid producers are never limited by their own traffic.
- Refused requests are counted (``garda_http_rate_limited_total``) and are *not* each
  audited: one ``audit_log`` row per client and minute (``status`` 429, ``path`` ``*``)
  carries how many requests were refused, by path, since the previous row. Counts not yet
  written are flushed by the worker's timer every ``AUDIT_EVERY`` seconds.
- The counts live in each worker's memory (the ``limits`` library's moving window): with
  several workers behind a load balancer a client gets up to the limit from each.

The moving-window bookkeeping is the ``limits`` library's (the one Flask-Limiter and SlowAPI
use), not hand-written.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from infra import metrics
from infra.logging import get_logger
from infra.tokens import audit

log = get_logger("garda.api.ratelimit")

AUDIT_EVERY = 60.0  # seconds: at most one aggregate audit row per client per minute


@dataclass
class _Refusals:
    since: float  # wall clock of the first refusal not yet audited
    paths: Counter[str] = field(default_factory=Counter)
    last_audit: float = 0.0  # monotonic time of the last row written for this client


class FailureLimiter:
    """Failed requests per client per minute (``per_minute`` 0: no limit)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(max(1, per_minute))
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._refused: dict[str, _Refusals] = {}

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait, or None when it may be served."""
        if not self.enabled or await self._limiter.test(self._item, client):
            return None
        stats = await self._limiter.get_window_stats(self._item, client)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def failed(self, client: str) -> None:
        """The client's request failed on its side (4xx): it costs one unit."""
        if self.enabled:
            await self._limiter.hit(self._item, client)

    async def refused(self, runtime: Any, client: str, path: str) -> None:
        """Count a 429; write the client's aggregate audit row at most once a minute."""
        metrics.HTTP_RATE_LIMITED.inc()
        r = self._refused.setdefault(client, _Refusals(since=time.time()))
        r.paths[path] += 1
        if time.monotonic() - r.last_audit >= AUDIT_EVERY:
            await self._audit(runtime, client, r)

    async def flush(self, runtime: Any) -> None:
        """Write the refusals not audited yet (the worker's timer calls this)."""
        for client, r in list(self._refused.items()):
            if r.paths:
                await self._audit(runtime, client, r)
            elif time.monotonic() - r.last_audit >= AUDIT_EVERY:
                del self._refused[client]  # quiet for a minute: forget it

    async def _audit(self, runtime: Any, client: str, r: _Refusals) -> None:
        paths, since = dict(r.paths), r.since
        r.paths.clear()
        r.since = time.time()
        r.last_audit = time.monotonic()
        detail = {
            "client": client,
            "refused": sum(paths.values()),
            "paths": paths,
            "since": since,
            "limit_per_minute": self.per_minute,
        }
        async with runtime.db.pool.acquire() as conn:
            await audit(conn, None, "*", "*", 429, None, detail)
        log.warning("requests rate-limited", client=client, refused=detail["refused"])
