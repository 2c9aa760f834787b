"""Timers: find deadlines that have passed and send a command into the worker's own stream.

A timer never changes state itself. For the partitions this processor owns, it reads the
cases whose next deadline (escalation, referral, reminder: ``handlers.clocks``) has passed
(and the claims that have stalled) and publishes ``garda.deadline.due`` /
``garda.referral.due`` / ``garda.claim.stalled`` commands keyed by worker_id to the
internal commands topic, which has the same partition count and so reaches this same
processor, in order with that worker's other events. The handler re-checks the command
against the current state, so duplicated or stale commands change nothing; command ids are
derived from (case, clock, level, deadline), so the database dedups repeats too.

When it scans (:meth:`DeadlineTimer.run`): at the moment the earliest upcoming deadline of
its partitions falls due (each scan also reads that moment), as soon as the partitions it
owns change (a new owner scans right after its assignment, not a timer interval later), and
at least every ``interval`` seconds (cases opened since the last scan); not while the group
rebalances (Faust's ``app.rebalancing``: from the revocation until the new assignment is
ready), when the old owner of a partition and its new one would both scan it and send every
command due twice, but at once when it is over. The ownership check
is in memory, every ``CHECK_EVERY`` seconds; only a scan queries the database. A scan's
commands go out in one producer batch: after a rejoin window hundreds fall due at once, and
sent one round trip each they held back the deadlines due behind them by seconds.

Rules decided where the design is silent:
- A full scan leaves out the cases (and claims) with a command in flight (sent, not yet
  handled by this worker, not due to be sent again): behind a backlog thousands wait for
  their commands, and every full scan read and decoded them all again for nothing.
- A command is remembered as sent only once the broker acknowledged it: one that failed
  (the broker away) is sent again on the next scan, not ``RESEND_AFTER`` later.
- A command still due ``RESEND_AFTER`` seconds after it was sent is sent again only if this
  worker has since handled its commands partition past the command's offset (it was applied
  and found early). "Handled" is the position before the scan's database read, not after
  it: a batch that applied the command and committed while the scan was reading was not
  seen by the read (the command looked still due), and judged by the newer position the
  command went out a second time (found no longer due: "ignored", ahead of the events
  that came after). While the consumer is merely behind, the command waits in the log:
  resent every 15 s regardless, a backlog of thousands of due cases (the full chaos run) was
  sent again and again, and the copies became the backlog. After ``RESEND_AFTER_MAX``
  seconds it is sent again anyway, then after twice that, and so on (up to ``RESEND_CAP``),
  in case it was lost some way nobody saw: a consumer minutes behind gets copies a doubling
  interval apart, not one a minute. When the broker acknowledges a command at an offset
  below one it acknowledged before on that partition, the log was recreated (a broker that
  came back empty): the commands sent to the old log on that partition are sent again at
  once. A command is forgotten once a scan of its partition no longer finds it due.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from handlers.claims import stall_due
from handlers.clocks import due_commands
from handlers.model import Case, Claim, iso
from infra.logging import get_logger, safe_error
from schemas import topics
from schemas.envelope import encode, new_envelope

log = get_logger("garda.timers")

TIMER_SOURCE = "garda/timer"
RESEND_AFTER = 15.0  # seconds before a command still due may be sent again
RESEND_AFTER_MAX = 60.0  # ... even if this worker has not handled its partition that far,
# doubling with every copy sent (up to RESEND_CAP): the consumer may be minutes behind
RESEND_CAP = 3600.0
SCAN_LIMIT = 5000  # rows a scan reads per query
CHECK_EVERY = 0.1  # seconds between checks of the owned partitions (in memory, no query)
MAX_REBALANCE_HOLD = 60.0  # seconds a rebalance in progress may hold the scans back

# Every scan reads per partition (``unnest`` + ``LATERAL``), so each part is an ordered read
# of the (partition, deadline) index that stops at what it needs. ``partition = ANY($1)``
# cannot read that index in deadline order: with 100,000 open cases the earliest upcoming
# deadline read all 100,000 index entries and their rows (~75 ms a scan), and the due list
# was planned as a parallel bitmap scan (~40 ms of worker start-up with nothing due).
NEXT_DUE_SQL = (
    "SELECT least("
    "(SELECT min(d) FROM unnest($1::int[]) AS p(part), LATERAL (SELECT next_due AS d"
    " FROM cases WHERE partition = p.part AND next_due > $2 ORDER BY next_due LIMIT 1) AS c),"
    " (SELECT min(d) FROM unnest($1::int[]) AS p(part), LATERAL (SELECT stall_due AS d"
    " FROM claims WHERE partition = p.part AND stall_due > $2 ORDER BY stall_due LIMIT 1) AS c))"
)
DUE_CASES_SQL = (
    "SELECT c.doc FROM unnest($1::int[]) AS p(part), LATERAL (SELECT doc, next_due FROM cases"
    " WHERE partition = p.part AND next_due <= $2 AND NOT (case_id = ANY($3::text[]))"
    f" ORDER BY next_due LIMIT {SCAN_LIMIT}) AS c ORDER BY c.next_due LIMIT {SCAN_LIMIT}"
)
# The same, for what fell due since the last scan only: a scan woken by a deadline reads the
# cases that became due, not again every case still waiting for its command to be applied
# (with thousands waiting behind a backlog, ten full scans a second were the backlog).
DUE_CASES_SINCE_SQL = (
    "SELECT c.doc FROM unnest($1::int[]) AS p(part), LATERAL (SELECT doc, next_due FROM cases"
    " WHERE partition = p.part AND next_due > $3 AND next_due <= $2"
    f" ORDER BY next_due LIMIT {SCAN_LIMIT}) AS c ORDER BY c.next_due LIMIT {SCAN_LIMIT}"
)
STALLED_CLAIMS_SINCE_SQL = (
    "SELECT c.doc FROM unnest($1::int[]) AS p(part), LATERAL (SELECT doc, stall_due FROM claims"
    " WHERE partition = p.part AND stall_due > $3 AND stall_due <= $2"
    f" ORDER BY stall_due LIMIT {SCAN_LIMIT}) AS c ORDER BY c.stall_due LIMIT {SCAN_LIMIT}"
)
STALLED_CLAIMS_SQL = (
    "SELECT c.doc FROM unnest($1::int[]) AS p(part), LATERAL (SELECT doc, stall_due FROM claims"
    " WHERE partition = p.part AND stall_due <= $2 AND NOT (claim_id = ANY($3::text[]))"
    f" ORDER BY stall_due LIMIT {SCAN_LIMIT}) AS c ORDER BY c.stall_due LIMIT {SCAN_LIMIT}"
)


def seconds_to_next_scan(
    *, since_scan: float, interval: float, until_due: float | None, check_every: float
) -> float:
    """How long the timer may sleep before it must look again: the next ownership check,
    the next periodic scan, or the earliest upcoming deadline, whichever comes first
    (``until_due``: seconds until it, None when none is known)."""
    wait = min(check_every, interval - since_scan)
    if until_due is not None:
        wait = min(wait, until_due)
    return max(0.0, wait)


def scan_due(
    *,
    owned: frozenset[int],
    last_owned: frozenset[int] | None,
    since_scan: float,
    interval: float,
    until_due: float | None,
) -> bool:
    """Whether to scan now: the owned partitions changed, the interval has passed, or the
    earliest upcoming deadline is due."""
    return (
        owned != last_owned
        or since_scan >= interval
        or (until_due is not None and until_due <= 0.0)
    )


class DeadlineTimer:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        # command id -> (when it was acknowledged, monotonic; partition; offset; the offset
        # this worker had handled on that partition then; copies sent)
        self._sent: dict[str, tuple[float, int, int, int, int]] = {}
        self._top: dict[int, int] = {}  # partition -> highest offset acknowledged
        self.resent = 0
        self.fired = 0
        self.scans = 0
        # The earliest deadline of the scanned partitions not yet due at the last scan.
        self.next_due: datetime | None = None
        self.scanned_to: datetime | None = None  # the moment the last scan read up to

    def _fresh(self, command_id: str, handled: dict[int, int] | None = None) -> bool:
        """Whether to send ``command_id`` (again): never sent, or still due although this
        worker has handled its commands partition past it (``RESEND_AFTER`` after it was
        sent), or waiting for ``RESEND_AFTER_MAX`` (lost: see the module doc). ``handled``:
        the positions (commands partition -> offset) taken before the read that found the
        command due (None: the current ones)."""
        sent = self._sent.get(command_id)
        if sent is None:
            return True
        at, partition, offset, handled_then, copies = sent
        age = time.monotonic() - at
        if age < RESEND_AFTER:
            return False
        if age >= min(RESEND_CAP, RESEND_AFTER_MAX * 2 ** (copies - 1)):
            return True
        # handled past it (only meaningful while the log's offsets only grew since)
        now_handled = self._handled(partition) if handled is None else handled.get(partition, -1)
        return handled_then < offset <= now_handled

    def _in_flight(self, handled: dict[int, int] | None = None) -> tuple[set[str], set[str]]:
        """(case ids, claim ids) with a command sent that this worker has not handled yet
        and that is not due to be sent again: a full scan leaves them out (reading them
        would only find their command pending again). ``handled`` as for ``_fresh``."""
        cases: set[str] = set()
        claims: set[str] = set()
        for cid, (_, partition, offset, handled_then, _) in self._sent.items():
            done = self._handled(partition) if handled is None else handled.get(partition, -1)
            if self._fresh(cid, handled) or handled_then < offset <= done:
                continue
            kind, _, rest = cid.partition(":")
            subject = rest.split(":", 1)[0]
            (claims if kind == "stalled" else cases).add(subject)
        return cases, claims

    def _handled(self, partition: int) -> int:
        topic = self.runtime.settings.topic(topics.COMMANDS)
        return int(self.runtime.processor.positions.get((topic, partition), -1))

    def _handled_now(self) -> dict[int, int]:
        """The commands partitions' handled positions now (partition -> offset)."""
        topic = self.runtime.settings.topic(topics.COMMANDS)
        return {p: int(o) for (t, p), o in self.runtime.processor.positions.items() if t == topic}

    def _acknowledged(self, command_id: str, partition: int, offset: int, at: float) -> None:
        top = self._top.get(partition, -1)
        if offset < top:
            # Offsets went back: the log was recreated (a broker that came back empty), and
            # the commands sent to the old one on this partition are gone: send them again.
            for k in [k for k, v in self._sent.items() if v[1] == partition]:
                del self._sent[k]
            log.warning("commands partition restarted its offsets", partition=partition)
        self._top[partition] = offset if offset < top else max(top, offset)
        copies = 1
        if command_id in self._sent:
            self.resent += 1
            copies += self._sent[command_id][4]
        self._sent[command_id] = (at, partition, offset, self._handled(partition), copies)

    async def run(
        self,
        partitions: Callable[[], Iterable[int]],
        interval: float,
        rebalancing: Callable[[], bool] = lambda: False,
    ) -> None:
        """Scan for as long as the runtime lives (a task of the app): see the module doc.

        ``partitions()`` gives the partitions to scan now (owned, minus any that must wait);
        a scan that fails (the database or the broker away) is logged and tried again
        ``interval`` seconds later. While ``rebalancing()`` (partitions in motion) nothing
        is scanned, for at most ``MAX_REBALANCE_HOLD`` seconds in a row; the end of a
        rebalance counts as an ownership change (scanned at once).

        A full scan (every case due) runs when the partitions changed and every ``interval``;
        a scan woken by the earliest deadline reads only what fell due since the last scan.
        A case written already overdue (opened from a backlog; its next level already past
        when the previous one is applied) is found by the next full scan.
        """
        last_owned: frozenset[int] | None = None
        last_scan = float("-inf")
        held_since: float | None = None
        while True:
            until_due = self._until_due()
            since = time.monotonic() - last_scan
            await asyncio.sleep(
                seconds_to_next_scan(
                    since_scan=since,
                    interval=interval,
                    until_due=until_due,
                    check_every=CHECK_EVERY,
                )
            )
            if not self.runtime.running:
                continue
            if rebalancing():
                now = time.monotonic()
                held_since = now if held_since is None else held_since
                if now - held_since < MAX_REBALANCE_HOLD:
                    last_owned = None  # scan as soon as the rebalance is over
                    continue
                if last_owned is None:
                    log.warning(
                        "deadline scan no longer waits for the rebalance",
                        waited_s=round(now - held_since, 1),
                    )
            else:
                held_since = None
            owned = frozenset(partitions())
            since = time.monotonic() - last_scan
            if not scan_due(
                owned=owned,
                last_owned=last_owned,
                since_scan=since,
                interval=interval,
                until_due=self._until_due(),
            ):
                continue
            full = owned != last_owned or since >= interval or self.scanned_to is None
            if full:
                last_scan = time.monotonic()
            try:
                await self.tick(owned, since=None if full else self.scanned_to)
            except Exception as exc:  # noqa: BLE001 - the timer must survive outages
                log.warning("deadline scan failed", error=safe_error(exc))
                self.next_due = None
                self.scanned_to = None  # the next scan is a full one
                await asyncio.sleep(interval)  # then scan again (owned still counts as new)
                continue
            last_owned = owned

    def _until_due(self) -> float | None:
        if self.next_due is None:
            return None
        return (self.next_due - datetime.now(UTC)).total_seconds()

    def _forget(
        self,
        scanned: list[int],
        due: set[str] | None,
        skipped: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """Forget the commands no longer due on the scanned partitions (``due``: every
        command due there, None when the scan read only the first ``SCAN_LIMIT``; the cases
        and claims in ``skipped`` were not read), and any older than ``RESEND_CAP`` twice."""
        cutoff = time.monotonic() - 2 * RESEND_CAP
        parts = set(scanned)
        for k in [
            k
            for k, v in self._sent.items()
            if v[0] < cutoff
            or (
                due is not None
                and v[1] in parts
                and k not in due
                and k.partition(":")[2].split(":", 1)[0] not in skipped
            )
        ]:
            del self._sent[k]

    async def tick(self, partitions: Iterable[int], since: datetime | None = None) -> int:
        """One scan over the given partitions (``since``: only what fell due after it);
        returns the number of commands sent."""
        parts = sorted(set(partitions))
        self.scans += 1
        now = datetime.now(UTC)
        if not parts:
            self.next_due = None
            self.scanned_to = now
            return 0
        rt = self.runtime
        # Before the read: a position is advanced only after its batch committed, so what
        # these positions say was handled, the read below sees applied.
        handled = self._handled_now()
        skip_cases, skip_claims = self._in_flight(handled) if since is None else (set(), set())
        async with rt.db.pool.acquire() as conn:
            self.next_due = await conn.fetchval(NEXT_DUE_SQL, parts, now)
            if since is None:
                case_rows = await conn.fetch(DUE_CASES_SQL, parts, now, list(skip_cases))
                claim_rows = await conn.fetch(STALLED_CLAIMS_SQL, parts, now, list(skip_claims))
            else:
                case_rows = await conn.fetch(DUE_CASES_SINCE_SQL, parts, now, since)
                claim_rows = await conn.fetch(STALLED_CLAIMS_SINCE_SQL, parts, now, since)
        commands: list[tuple[str, str, dict[str, Any]]] = []
        cases = [Case.from_doc(r["doc"]) for r in case_rows]
        commands.extend(due_commands(cases, rt.policy, now))  # every case clock (handlers.clocks)
        for r in claim_rows:
            claim = Claim.from_doc(r["doc"])
            due = stall_due(claim, rt.policy)
            if due is None or due > now:
                continue
            last = claim.last_change_at or claim.filed_at
            data: dict[str, Any] = {
                "claim_id": claim.claim_id,
                "worker_id": claim.worker_id,
                "last_change_at": iso(last),
            }
            commands.append(("garda.claim.stalled", f"stalled:{claim.claim_id}:{iso(last)}", data))
        topic = rt.settings.topic(topics.COMMANDS)
        batch: list[tuple[str, str, dict[str, Any]]] = []
        records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        for type_, cid, data in commands:
            if not self._fresh(cid, handled):
                continue
            # A fresh id per send: commands are made idempotent by the state they are checked
            # against (a level fires once), not by their id, so that a command judged early
            # (clock skew between workers) never blocks the ones sent after it.
            env = new_envelope(
                type=type_,
                subject=data["worker_id"],
                data=data,
                id=f"{cid}:{uuid.uuid4().hex[:12]}",
                source=TIMER_SOURCE,
                time=now,
            )
            batch.append((type_, cid, data))
            records.append(
                (
                    topic,
                    data["worker_id"].encode(),
                    encode(env),
                    [("content-type", b"application/cloudevents+json")],
                )
            )
        results = await rt.relay.send_raw_many(records) if records else []
        sent = 0
        failed: BaseException | None = None
        acked_at = time.monotonic()
        for (type_, cid, data), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                failed = failed or result
                continue
            self._acknowledged(cid, result[0], result[1], acked_at)
            log.info(
                "deadline command sent",
                type=type_,
                command_id=cid,
                worker_id=data["worker_id"],
                due_at=data.get("due_at"),
            )
            sent += 1
        self.fired += sent
        complete = since is None and len(case_rows) < SCAN_LIMIT and len(claim_rows) < SCAN_LIMIT
        self._forget(
            parts, {cid for _, cid, _ in commands} if complete else None, skip_cases | skip_claims
        )
        if failed is not None:
            raise failed  # the scan failed: the unsent commands go again on the next scan
        self.scanned_to = now
        return sent
