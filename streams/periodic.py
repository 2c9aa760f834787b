"""The worker's periodic tasks: outbox sweep, deadline scan, silent-source check, rate-limit
audit and pruning. Each one does nothing until the runtime is running and survives any
failure (it logs it; the next tick tries again).

Rules decided where the design is silent:
- The deadline scan (``DeadlineTimer.run``: when a deadline falls due, when the partitions
  change, at least every ``timer_interval``) leaves out a partition whose responders'
  actions published before the wait began are not all handled yet (an acknowledgement in
  flight must count before its deadline does): it waits until the urgent lane reached the
  high-water mark seen when the wait began, not for "no lag", so steady traffic cannot keep
  it waiting. A partition is left out for at most ``ACTIONS_WAIT`` seconds in a row, also
  while its high-water mark is unknown: then it is scanned anyway (logged) until it has
  caught up, so a stuck or unknown partition never holds escalations for long. A partition
  that stops waiting is a change of the partitions: scanned at once. One that caught up
  does not wait again for ``REARM_AFTER`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from infra.logging import get_logger, safe_error
from schemas import topics
from streams.lag import partition_lag, partition_progress
from streams.source_watch import caught_up
from streams.web.ratelimit import AUDIT_EVERY

log = get_logger("garda.streams")

ACTIONS_WAIT = 5.0  # seconds a partition's deadline scan may be held by unhandled case actions
# Seconds after a partition caught up before it may wait again: the scan's caller asks every
# 0.1 s, and a partition that left and rejoined the scanned set each time would count as a
# change of the partitions (a full scan) at every step of steady action traffic.
REARM_AFTER = 1.0
LOG_WAIT_OVER = 0.5  # seconds: a wait that ends is logged when it lasted this long


class PendingActions:
    """Which partitions' deadline scans wait for case actions published before the scan."""

    def __init__(self, max_wait: float = ACTIONS_WAIT, rearm: float = REARM_AFTER) -> None:
        self.max_wait = max_wait
        self.rearm = rearm
        # partition -> (offset the actions lane must reach, None while unknown; since when)
        self._targets: dict[int, tuple[int | None, float]] = {}
        self._clear_until: dict[int, float] = {}  # caught up: no new wait before then
        self._given_up: set[int] = set()  # waited max_wait: scanned until it catches up

    def waiting(
        self, progress: dict[int, tuple[int, int | None]], owned: set[int], now: float
    ) -> set[int]:
        """Of ``owned``, the partitions to skip now. ``progress``: partition -> (next offset
        to handle, fetch high-water mark or None) of the actions topic."""
        for p in set(self._targets) | set(self._clear_until) | self._given_up:
            if p not in owned:
                self._targets.pop(p, None)
                self._clear_until.pop(p, None)
                self._given_up.discard(p)
        out: set[int] = set()
        for p in owned:
            nxt, hw = progress.get(p, (0, None))
            if p in self._given_up:
                if hw is not None and nxt >= hw:
                    self._given_up.discard(p)
                    self._clear_until[p] = now + self.rearm
                continue
            if now < self._clear_until.get(p, float("-inf")):
                continue
            target, since = self._targets.get(p, (None, now))
            if target is None:
                target = hw
            if target is not None and nxt >= target:
                self._targets.pop(p, None)
                self._clear_until[p] = now + self.rearm
                continue
            if now - since >= self.max_wait:
                log.warning(
                    "deadline scan no longer waits for case actions",
                    partition=p,
                    handled_to=nxt,
                    high_water=target,
                    waited_s=round(now - since, 1),
                )
                self._targets.pop(p, None)
                self._given_up.add(p)
                continue
            self._targets[p] = (target, since)
            out.add(p)
        return out


def _guarded(name: str, runtime: Any, job: Callable[[], Awaitable[Any]]) -> Callable[[], Any]:
    """The timer body: ``job()`` once the runtime runs; a failure is logged, never raised."""

    async def tick() -> None:
        if not runtime.running:
            return
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - a timer must survive outages; next tick retries
            log.warning(f"{name} failed", error=safe_error(exc))

    tick.__name__ = tick.__qualname__ = name.replace(" ", "_")
    return tick


class DeadlinePartitions:
    """The partitions the deadline scan may scan now: owned, minus those still waiting for
    the case actions published before the wait began (``PendingActions``)."""

    def __init__(self, app: faust.App, runtime: Any) -> None:
        self.app = app
        settings = runtime.settings
        self.input_names = {settings.topic(t) for t in topics.INPUTS}
        self.actions_topic = settings.topic(topics.CASE_ACTIONS)
        self.pending = PendingActions()
        self._logged: set[int] = set()
        self._waiting_since: dict[int, float] = {}  # partition -> when its wait began

    def __call__(self) -> set[int]:
        app = self.app
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic in self.input_names}
        progress = {
            p: v for (t, p), v in partition_progress(app).items() if t == self.actions_topic
        }
        now = time.monotonic()
        waiting = self.pending.waiting(progress, owned, now)
        if waiting and waiting != self._logged:  # once per change
            log.info("deadline scan waits for pending case actions", partitions=sorted(waiting))
        self._logged = waiting
        ended = [p for p in self._waiting_since if p not in waiting]
        waited = {p: now - self._waiting_since.pop(p) for p in ended}
        long = sorted(p for p in ended if p in owned and waited[p] >= LOG_WAIT_OVER)
        if long:
            # How long the escalations of a partition just assigned were held (the first
            # fetch of its actions partition brings the high-water mark): for operators and
            # bench.rebalance.
            log.info(
                "deadline scan stops waiting for case actions",
                partitions=long,
                waited_s=round(max(waited[p] for p in long), 2),
            )
        for p in waiting:
            self._waiting_since.setdefault(p, now)
        return owned - waiting


def register_periodic(app: faust.App, runtime: Any) -> DeadlinePartitions:
    """Define the periodic tasks on ``app``; returns the deadline scan's partition choice."""
    settings, policy = runtime.settings, runtime.policy
    deadline_partitions = DeadlinePartitions(app, runtime)

    app.timer(2.0)(_guarded("outbox sweep", runtime, runtime.relay.sweep))

    async def fire_deadlines() -> None:
        # Scans when a deadline falls due, when the partitions change, and at least every
        # timer interval (streams.timers); survives outages itself.
        await runtime.deadlines.run(
            deadline_partitions,
            settings.timer_interval,
            rebalancing=lambda: app.rebalancing,
        )

    app.task(fire_deadlines, traced=False)

    async def check_sources() -> None:
        if not policy.sources:
            return
        if not caught_up(partition_lag(app), settings.batch_size):
            return  # read the backlog first: an event in it may end a silence
        await runtime.sources.check()

    app.timer(settings.timer_interval)(_guarded("source check", runtime, check_sources))

    async def audit() -> None:
        await runtime.limiter.flush(runtime)

    app.timer(AUDIT_EVERY)(_guarded("rate-limit audit", runtime, audit))
    app.timer(policy.retention.interval.total_seconds())(_guarded("prune", runtime, runtime.prune))
    return deadline_partitions
