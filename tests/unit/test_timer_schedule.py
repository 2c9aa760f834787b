"""When the deadline timer scans (streams.timers): at the earliest upcoming deadline, when the
owned partitions change, and at least every interval."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import pytest

from streams.timers import CHECK_EVERY, DeadlineTimer, scan_due, seconds_to_next_scan

OWNED = frozenset({0, 3})


def test_sleeps_until_the_earliest_of_check_interval_and_deadline() -> None:
    assert seconds_to_next_scan(
        since_scan=0.2, interval=1.0, until_due=None, check_every=0.1
    ) == pytest.approx(0.1)
    # a deadline sooner than the next ownership check: wake exactly at it
    assert seconds_to_next_scan(
        since_scan=0.2, interval=1.0, until_due=0.03, check_every=0.1
    ) == pytest.approx(0.03)
    # the periodic scan sooner than the next check
    assert seconds_to_next_scan(
        since_scan=0.95, interval=1.0, until_due=5.0, check_every=0.1
    ) == pytest.approx(0.05)
    # already overdue or past the interval: no sleep
    assert seconds_to_next_scan(since_scan=0.2, interval=1.0, until_due=-2.0, check_every=0.1) == 0
    assert seconds_to_next_scan(since_scan=3.0, interval=1.0, until_due=None, check_every=0.1) == 0


def test_a_new_owner_scans_at_once() -> None:
    # first check after start, or partitions assigned since the last scan
    assert scan_due(owned=OWNED, last_owned=None, since_scan=0.0, interval=1.0, until_due=9.0)
    assert scan_due(
        owned=OWNED | {5}, last_owned=OWNED, since_scan=0.1, interval=1.0, until_due=9.0
    )
    # partitions taken away too (the next upcoming deadline must be re-read for the rest)
    assert scan_due(
        owned=frozenset({0}), last_owned=OWNED, since_scan=0.1, interval=1.0, until_due=9.0
    )


def test_scans_when_a_deadline_falls_due_or_the_interval_passed() -> None:
    same = {"owned": OWNED, "last_owned": OWNED}
    assert not scan_due(**same, since_scan=0.3, interval=1.0, until_due=0.4)
    assert not scan_due(**same, since_scan=0.3, interval=1.0, until_due=None)
    assert scan_due(**same, since_scan=0.3, interval=1.0, until_due=0.0)
    assert scan_due(**same, since_scan=0.3, interval=1.0, until_due=-1.5)
    assert scan_due(**same, since_scan=1.0, interval=1.0, until_due=None)


class _Runtime:
    running = True


class _Recording(DeadlineTimer):
    """The real scheduling loop; the scan only records which partitions it was given."""

    def __init__(self) -> None:
        super().__init__(_Runtime())
        self.ticks: list[frozenset[int]] = []

    async def tick(self, partitions: Iterable[int]) -> int:
        self.ticks.append(frozenset(partitions))
        self.next_due = None
        return 0


async def _until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not cond():
            await asyncio.sleep(0.01)


async def test_no_scan_while_the_group_rebalances_then_one_at_once() -> None:
    timer = _Recording()
    owned = {0, 1}
    moving = True
    task = asyncio.create_task(
        timer.run(lambda: owned, interval=3600.0, rebalancing=lambda: moving)
    )
    try:
        await asyncio.sleep(5 * CHECK_EVERY)
        assert timer.ticks == []  # partitions in motion: neither owner scans them
        moving = False
        await _until(lambda: len(timer.ticks) == 1)
        assert timer.ticks == [frozenset({0, 1})]
        owned = {0, 1, 4}  # an assignment change without a rebalance flag: scanned too
        await _until(lambda: len(timer.ticks) == 2)
        assert timer.ticks[-1] == frozenset({0, 1, 4})
        await asyncio.sleep(5 * CHECK_EVERY)
        assert len(timer.ticks) == 2  # nothing due, same partitions, interval far away
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
