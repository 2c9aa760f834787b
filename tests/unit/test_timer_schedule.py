"""When the deadline timer scans (streams.timers): at the earliest upcoming deadline, when the
owned partitions change, and at least every interval; not while the group rebalances; when a
command still due is sent again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from schemas import topics
from streams.timers import (
    CHECK_EVERY,
    RESEND_AFTER,
    RESEND_AFTER_MAX,
    DeadlineTimer,
    scan_due,
    seconds_to_next_scan,
)

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
        self.full: list[bool] = []
        self.upcoming: datetime | None = None  # what the next scan reads as next due

    async def tick(self, partitions: Iterable[int], since: datetime | None = None) -> int:
        self.ticks.append(frozenset(partitions))
        self.full.append(since is None)
        self.next_due, self.upcoming = self.upcoming, None
        self.scanned_to = datetime.now(UTC)
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
        assert timer.full == [True, True]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Settings:
    @staticmethod
    def topic(name: str) -> str:
        return f"t.{name}"


class _Processor:
    def __init__(self) -> None:
        self.positions: dict[tuple[str, int], int] = {}


class _ResendRuntime:
    running = True

    def __init__(self) -> None:
        self.settings = _Settings()
        self.processor = _Processor()


def _commands_tp(partition: int) -> tuple[str, int]:
    return (_Settings.topic(topics.COMMANDS), partition)


def test_a_command_is_resent_only_once_its_partition_was_handled_past_it() -> None:
    rt = _ResendRuntime()
    timer = DeadlineTimer(rt)
    rt.processor.positions[_commands_tp(2)] = 99
    ago = time.monotonic() - RESEND_AFTER - 1
    timer._acknowledged("c1", 2, 120, ago)
    assert timer._fresh("never-sent")
    assert not timer._fresh("c1")  # the consumer is behind: the command waits in the log
    rt.processor.positions[_commands_tp(2)] = 120
    assert timer._fresh("c1")  # handled past it and still due: send it again
    timer._acknowledged("c2", 2, 130, time.monotonic())
    assert not timer._fresh("c2")  # sent just now
    timer._acknowledged("c3", 2, 140, time.monotonic() - RESEND_AFTER_MAX - 1)
    assert timer._fresh("c3")  # waited too long: sent again whatever the position


def test_offsets_going_back_mean_the_log_was_recreated() -> None:
    rt = _ResendRuntime()
    timer = DeadlineTimer(rt)
    now = time.monotonic()
    timer._acknowledged("old-a", 1, 500, now)
    timer._acknowledged("old-b", 4, 700, now)
    assert not timer._fresh("old-a")
    timer._acknowledged("new", 1, 3, now)  # partition 1 starts again from 0
    assert timer._fresh("old-a")  # gone with the old log: sent again at once
    assert not timer._fresh("new")
    assert not timer._fresh("old-b")  # another partition: nothing known yet
    timer._acknowledged("newer", 1, 4, now)
    assert not timer._fresh("new")  # offsets grow again: nothing forgotten


def test_the_fallback_resend_backs_off_and_a_command_no_longer_due_is_forgotten() -> None:
    timer = DeadlineTimer(_ResendRuntime())
    now = time.monotonic()
    timer._acknowledged("c", 3, 10, now)
    timer._acknowledged("c", 3, 11, now - RESEND_AFTER_MAX - 1)  # the second copy
    assert not timer._fresh("c")  # the next fallback waits twice as long
    timer._acknowledged("c", 3, 12, now - 2 * RESEND_AFTER_MAX - 1)  # ... a third copy
    assert not timer._fresh("c")
    timer._acknowledged("d", 3, 20, now)
    timer._acknowledged("e", 5, 30, now)
    timer._forget([3], None)  # a scan cut at SCAN_LIMIT: it does not know what is due
    assert not timer._fresh("d")
    timer._forget([3], {"c"})  # partition 3 scanned: d is no longer due there
    assert timer._fresh("d")
    assert not timer._fresh("c")
    assert not timer._fresh("e")  # partition 5 not scanned: kept


async def test_a_scan_woken_by_a_deadline_reads_only_what_fell_due_since() -> None:
    timer = _Recording()
    timer.upcoming = datetime.now(UTC) + timedelta(seconds=3 * CHECK_EVERY)
    task = asyncio.create_task(timer.run(lambda: {2}, interval=3600.0))
    try:
        await _until(lambda: len(timer.ticks) == 2)
        assert timer.full == [True, False]  # the first scan full, the deadline's incremental
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_full_scan_leaves_out_what_has_a_command_in_flight() -> None:
    rt = _ResendRuntime()
    timer = DeadlineTimer(rt)
    now = time.monotonic()
    rt.processor.positions[_commands_tp(1)] = 9
    timer._acknowledged("deadline:CASE-a:ack:1:2026-01-01T00:00:00Z", 1, 10, now)
    timer._acknowledged("stalled:CLM-b:2026-01-01T00:00:00Z", 1, 11, now)
    timer._acknowledged("referral:CASE-c:2026-01-01T00:00:00Z", 2, 5, now)
    rt.processor.positions[_commands_tp(2)] = 5  # ... and handled already
    assert timer._in_flight() == ({"CASE-a"}, {"CLM-b"})
    # a full scan that did not read CASE-a keeps its command; CASE-c's is no longer due
    timer._forget([1, 2], set(), {"CASE-a", "CLM-b"})
    assert not timer._fresh("deadline:CASE-a:ack:1:2026-01-01T00:00:00Z")
    assert timer._fresh("referral:CASE-c:2026-01-01T00:00:00Z")


class _Conn:
    """The scan's database: a claim stalled for weeks; the batch that applies its command
    commits while the scan reads (``during_read``)."""

    def __init__(self, doc: dict, during_read: Callable[[], None]) -> None:
        self.doc = doc
        self.during_read = during_read

    async def fetchval(self, sql: str, *args: object) -> None:
        return None

    async def fetch(self, sql: str, *args: object) -> list[dict]:
        if "FROM claims" not in sql:
            return []
        skipped = args[2] if isinstance(args[2], list) else []  # a full scan's in-flight ids
        rows = [] if self.doc["claim_id"] in skipped else [{"doc": self.doc}]
        # the snapshot the read saw: still due...
        self.during_read()  # ... and the command applied, its position advanced, meanwhile
        return rows


class _Pool:
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.pool = self  # as infra.db.Database: ``db.pool.acquire()``

    @contextlib.asynccontextmanager
    async def acquire(self):  # type: ignore[no-untyped-def]
        yield self.conn


class _Relay:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def send_raw_many(self, records: list[tuple]) -> list[tuple[int, int]]:
        self.sent += records
        return [(2, 200 + i) for i in range(len(records))]


async def test_a_command_applied_while_the_scan_reads_is_not_sent_again() -> None:
    from handlers.model import Claim
    from handlers.policy import load_policy

    rt = _ResendRuntime()
    long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    claim = Claim("CL-1", "W-1", "JKK", filed_at=long_ago, last_change_at=long_ago)
    cid = f"stalled:CL-1:{long_ago.strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def applied() -> None:
        rt.processor.positions[_commands_tp(2)] = 120

    rt.db = _Pool(_Conn(claim.to_doc(), applied))  # type: ignore[attr-defined]
    rt.policy = load_policy()  # type: ignore[attr-defined]
    rt.relay = _Relay()  # type: ignore[attr-defined]
    timer = DeadlineTimer(rt)
    rt.processor.positions[_commands_tp(2)] = 99
    # Sent a while ago (offset 120), the consumer behind it until the read below.
    timer._acknowledged(cid, 2, 120, time.monotonic() - RESEND_AFTER - 1)
    assert await timer.tick([2]) == 0  # the read predates the commit: not a reason to resend
    assert rt.relay.sent == []
    # The next scan's read sees it still due after its partition was handled past it:
    # applied and found early (another worker's clock), sent again.
    assert await timer.tick([2]) == 1
    (record,) = rt.relay.sent
    assert record[0] == _Settings.topic(topics.COMMANDS) and record[1] == b"W-1"
