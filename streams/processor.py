"""The batch pipeline: decode, dedup, apply the handlers, write everything in one transaction.

Independent of Faust so that the agent, ``garda rebuild`` and tests drive the same code:
``BatchProcessor.process(records)`` takes raw Kafka records and returns the outbox rows to
publish. Offsets may be committed only after it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import stamina

from errors import CaseConflict, GardaError, InvalidEvent, Rejected
from handlers.dispatch import handle
from handlers.model import Aggregate, Effects, OutputEvent, parse_dt
from handlers.policy import Policy
from infra import agencies, employers, metrics
from infra.db import Database
from infra.faults import is_retriable
from infra.hooks.enqueue import Hooks
from infra.logging import get_logger, safe_error, write_lines
from infra.settings import Settings
from infra.store import (
    BatchWrite,
    DeadLetter,
    LoadedRows,
    OutboxRow,
    ProcessedId,
    batch_state,
    load_aggregates,
    lock_partitions,
    lock_workers,
    processed_digests,
    write_batch,
    write_dead_letters,
)
from schemas import topics
from schemas.envelope import GARDA_SOURCE, Envelope, decode, encode
from schemas.fields import MAX_YEAR, MIN_YEAR
from streams.undecodable import undecodable_reason

_LOGGER = "garda.processor"
log = get_logger(_LOGGER)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RawRecord:
    topic: str  # full name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float | None = None  # the Kafka record timestamp, in seconds


@dataclass
class BatchReport:
    outbox_seqs: list[int] = field(default_factory=list)
    # the batch's own output rows, as inserted (seq set): the relay sends them from memory
    outbox_rows: list[OutboxRow] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    # (logical topic, event type or None, outcome) -> count, for garda_events_total
    labelled: Counter = field(default_factory=Counter)
    # (logical topic, reason class) -> count, for garda_deadletters_total
    deadletters: Counter = field(default_factory=Counter)
    # (level, missed deadline) of each escalation applied
    escalations: list[tuple[int, datetime | None]] = field(default_factory=list)
    alerts: Counter = field(default_factory=Counter)  # alert type -> count

    def merge(self, other: BatchReport) -> None:
        self.outbox_seqs += other.outbox_seqs
        self.outbox_rows += other.outbox_rows
        self.outcomes.update(other.outcomes)
        self.labelled.update(other.labelled)
        self.deadletters.update(other.deadletters)
        self.escalations += other.escalations
        self.alerts.update(other.alerts)

    def record_metrics(self, now: datetime) -> None:
        """Add this committed batch to the per-process Prometheus counters."""
        metrics.record_events(self.labelled.items())
        for (topic, reason), n in self.deadletters.items():
            metrics.DEADLETTERS.labels(topic, reason).inc(n)
        for level, missed in self.escalations:
            metrics.record_escalation(level, missed, now)
        for alert, n in self.alerts.items():
            metrics.ALERTS.labels(alert).inc(n)


def _received_at(ts: float | None) -> datetime | None:
    """When Garda received a record: its timestamp (None when absent or out of range)."""
    if not ts or not _EPOCH_MIN <= ts <= _EPOCH_MAX:
        return None
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class _Decoded:
    record: RawRecord
    envelope: Envelope
    digest: str = ""
    # When Garda received it (``_received_at``): read by the sources' last-seen, the handlers
    # and the deadlines of every decoded record, so computed once, when it is decoded (a
    # ``cached_property`` took its lock on every first read).
    received_at: datetime | None = None

    def envelope_time(self, now: datetime) -> datetime:
        """When the record was published (its Kafka timestamp, in range), else ``now``."""
        return self.received_at or now


@dataclass
class _Run:
    """One attempt at a batch: its clock, what it will write, its report and its log lines
    (written once the transaction has committed)."""

    now: datetime
    write: BatchWrite
    report: BatchReport = field(default_factory=BatchReport)
    notes: list[_Note] = field(default_factory=list)


DUPLICATE_CONFLICT = "duplicate id, different content"


def content_digest(env: Envelope) -> str:
    """What makes two events with one (source, id) the same event: type, subject, the
    producer's own ``time`` (as an instant; absent stays absent) and ``data`` (as JSON, keys
    sorted). Bytes, encoding mode and key order may differ between deliveries.

    The digests are stored (``processed_events.digest``), so the text hashed is exactly what
    ``json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)`` writes. orjson
    writes the same bytes, faster, when its output is plain printable ASCII and the time is
    a float ``json`` writes without an exponent; anything else takes the ``json`` path.
    """
    ts = env.time.timestamp() if env.time is not None else None
    doc = {"type": env.type, "subject": env.subject, "time": ts, "data": env.data}
    text: bytes | None = None
    if ts is None or ts == 0 or 1e-4 <= abs(ts) < 1e15:
        try:
            text = orjson.dumps(doc, option=_DIGEST_OPTIONS)
        except (orjson.JSONEncodeError, TypeError):
            text = None
        if text is not None and (not text.isascii() or b"\x7f" in text):
            text = None  # json escapes non-ASCII and DEL as \uXXXX; orjson writes them raw
    if text is None:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(text).hexdigest()[:32]


# Sorted keys; a datetime, dataclass or subclass (never in decoded data) is refused, so it
# takes the json path (which writes str() of it).
_DIGEST_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


_Note = tuple[str, str, dict[str, Any]]  # (level, event, fields)
# A record that fails alone while the database is healthy is tried this many times before it
# is dead-lettered (a one-off cancel must not lose a valid event; a poison record must not
# hold its partition forever).
SINGLE_RECORD_ATTEMPTS = 4
# Failures that a retry cannot cure: the record itself is the cause (a value PostgreSQL or
# Python refuses, a case id owned by another worker). Such a record is dead-lettered at once
# with the error, so it never waits on the retries meant for outages.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # SQLSTATE 22: invalid text, out-of-range value
    asyncpg.IntegrityConstraintViolationError,  # SQLSTATE 23
    UnicodeError,
    OverflowError,
    CaseConflict,
)
# How long a failed batch waits before its next attempt (stamina.retry_context keywords):
# exponential from 0.2 s, plus up to 0.2 s of jitter, at most 5 s; no limit on attempts or
# time (a partition waits out an outage, it never skips a record).
RETRY_WAIT: dict[str, Any] = {
    "attempts": None,
    "timeout": None,
    "wait_initial": 0.2,
    "wait_jitter": 0.2,
    "wait_max": 5.0,
}
# Events applied between two yields to the event loop. Both lanes share one loop: without
# a yield, an incident that arrives while the bulk lane applies a batch of 1,000 claims
# waits for all of them (~0.1-0.3 s of Python); with it, for at most this many. A smaller
# transaction instead (a step of 250 claims) cost 20 % more CPU per event.
YIELD_EVERY = 64
# Batches between ``load`` and their write at once: one per lane; the rest is left over
# from failed attempts (``BatchProcessor.load``).
_LOADED_KEPT = 8
_EPOCH_MIN = datetime(MIN_YEAR, 1, 1, tzinfo=UTC).timestamp()
_EPOCH_MAX = datetime(MAX_YEAR, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def is_deterministic(exc: BaseException) -> bool:
    """Whether ``exc`` is the record's own fault (retrying gives the same failure)."""
    if isinstance(exc, GardaError):
        return not exc.retriable
    return isinstance(exc, DETERMINISTIC_ERRORS)


def _handled(env: Envelope, outcome: str, *, level: str = "info", **more: Any) -> _Note:
    """The "event handled" log line of one event (written after its batch committed)."""
    fields = {"event_id": env.id, "type": env.type, "worker_id": env.subject, "outcome": outcome}
    return (level, "event handled", {**fields, **more})


def _failure_reason(exc: BaseException) -> str:
    """The dead-letter reason of a record that failed on its own."""
    if isinstance(exc, CaseConflict):
        return f"rejected: {exc}"
    if is_deterministic(exc):
        return f"refused by the database or runtime: {safe_error(exc)}"
    return f"internal error: {safe_error(exc)}"


def in_time_order(records: Sequence[RawRecord]) -> list[RawRecord]:
    """Merge the batch's topic-partitions by record timestamp, keeping each one's own order.

    A worker's events arrive on several topics (a departure on one, an incident on another);
    Kafka orders them only within a topic-partition. Within a batch the merge applies them in
    the order they were published.
    """
    streams: dict[tuple[str, int], list[RawRecord]] = {}
    for rec in records:
        streams.setdefault((rec.topic, rec.partition), []).append(rec)
    if len(streams) == 1:
        return list(records)
    return list(heapq.merge(*streams.values(), key=lambda r: r.timestamp or 0.0))


class BatchProcessor:
    """Turns batches of raw records into committed state and outbox rows."""

    def __init__(
        self, db: Database, settings: Settings, policy: Policy, *, clock: Clock = utcnow
    ) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self.totals: Counter = Counter()
        self.positions: dict[tuple[str, int], int] = {}  # last offset done per (topic, partition)
        self._logical = {settings.topic(t): t for t in topics.INPUTS}
        self._expected = frozenset(s.source for s in policy.sources)
        self.deadletter_topic = settings.topic(topics.DEADLETTER)
        # Alerting hooks: deliveries are written in the batch's transaction (None: no hooks,
        # e.g. garda rebuild, which must not notify anyone twice).
        self.hooks: Hooks | None = None
        # What ``load`` read, per connection, until ``write`` takes it.
        self._loaded: dict[asyncpg.Connection, LoadedRows] = {}

    # -- decoding -----------------------------------------------------------------------
    def _decode(self, rec: RawRecord) -> _Decoded:
        logical = self._logical.get(rec.topic)
        if logical is None:
            raise InvalidEvent(f"not an input topic: {rec.topic}")
        env = decode(rec.key, rec.value, rec.headers, topic=logical)
        digest = content_digest(env)
        if env.time is None and rec.timestamp:
            if not _EPOCH_MIN <= rec.timestamp <= _EPOCH_MAX:
                raise InvalidEvent(
                    f"the record timestamp {rec.timestamp!r} s is out of range (years"
                    f" {MIN_YEAR} to {MAX_YEAR}) and the event has no time attribute",
                    "timestamp",
                )
            # No CloudEvents ``time``: the record's timestamp stands in, so that a replay
            # (garda rebuild) derives the same deadlines as the first run.
            received = _received_at(rec.timestamp)
            return _Decoded(rec, replace(env, time=received), digest, received)
        return _Decoded(rec, env, digest, _received_at(rec.timestamp))

    def _dead_letter(self, rec: RawRecord, error: str, env: Envelope | None = None) -> DeadLetter:
        return DeadLetter(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            error=error,
            key=rec.key,
            value=rec.value or b"",
            headers=list(rec.headers),
            source=env.source if env else None,
            event_id=env.id if env else None,
        )

    # -- the pipeline -------------------------------------------------------------------
    async def process(self, records: Sequence[RawRecord]) -> BatchReport:
        report = await self._process_with_retry(records)
        for rec in records:
            tp = (rec.topic, rec.partition)
            if rec.offset > self.positions.get(tp, -1):
                self.positions[tp] = rec.offset
        return report

    async def _process_with_retry(self, records: Sequence[RawRecord]) -> BatchReport:
        """Process one batch; retries transient failures until it succeeds (or is cancelled).

        A failure is transient when ``infra.faults.is_retriable`` says so (the database or
        the network went away). Any other failure of a batch splits it and retries it record
        by record; a record that still fails ``SINGLE_RECORD_ATTEMPTS`` times is dead-lettered
        with the error and the rest go through. Nothing is ever skipped: when even the
        dead-letter cannot be written the partition waits here (and tries the record again).

        The waits are stamina's (``RETRY_WAIT``): exponential from 0.2 s, jittered, capped at
        5 s, with no limit on attempts or time. Every failure counts as one attempt, whatever
        its kind; each attempt logs its own line (stamina's own retry log is off,
        ``infra.logging``). An exception (never a cancellation) leaves the attempt only when it is
        to be retried: the split and the dead-letter return from inside it.
        """
        async for attempt in stamina.retry_context(on=Exception, **RETRY_WAIT):
            with attempt:
                try:
                    return await self._process_once(records)
                except Exception as exc:
                    if is_retriable(exc):
                        log.warning(
                            "batch failed, will retry",
                            error=safe_error(exc),
                            attempt=attempt.num,
                            retry_in=round(attempt.next_wait, 2),
                            records=len(records),
                        )
                        raise
                    if len(records) > 1:
                        log.exception(
                            "batch failed; retrying record by record", records=len(records)
                        )
                        report = BatchReport()
                        for rec in records:
                            report.merge(await self._process_with_retry([rec]))
                        return report
                    if attempt.num < SINGLE_RECORD_ATTEMPTS and not is_deterministic(exc):
                        log.warning(
                            "record failed, will retry before dead-lettering it",
                            error=safe_error(exc),
                            attempt=attempt.num,
                            retry_in=round(attempt.next_wait, 2),
                        )
                        raise
                    log.exception("record failed permanently; dead-lettering it")
                    reason = _failure_reason(exc)
                try:
                    return await self._dead_letter_only(records[0], reason)
                except Exception:
                    log.critical(
                        "dead-letter write failed; retrying",
                        exc_info=True,
                        topic=records[0].topic,
                        partition=records[0].partition,
                        offset=records[0].offset,
                    )
                    raise
        raise AssertionError("unreachable: the retries above have no limit")

    async def _dead_letter_only(self, rec: RawRecord, error: str) -> BatchReport:
        async with self.db.pool.acquire() as conn, conn.transaction():
            seqs = await write_dead_letters(
                conn, [self._dead_letter(rec, error)], self.deadletter_topic
            )
        self.totals["deadletter"] += 1
        topic = self.logical_topic(rec.topic)
        report = BatchReport(
            outbox_seqs=seqs,
            outcomes=Counter(deadletter=1),
            labelled=Counter({(topic, None, "error"): 1}),
            deadletters=Counter({(topic, "error"): 1}),
        )
        report.record_metrics(self.clock())
        return report

    def outbox_row(self, ev: OutputEvent, now: datetime) -> OutboxRow:
        """Garda's own output event as an outbox row (built directly: the handlers made it,
        no input validation)."""
        return OutboxRow(
            event_id=f"{ev.topic}:{ev.id}",
            topic=self.settings.topic(ev.topic),
            key=ev.key.encode(),
            value=encode(_output_envelope(ev, now)),
            headers=[_CE_CONTENT_TYPE],
        )

    # -- the locks, reads and writes of a batch (``garda rebuild`` has its own) -------------
    async def lock(
        self, conn: asyncpg.Connection, records: Sequence[RawRecord], decoded: list[_Decoded]
    ) -> None:
        """Take the batch's partition and worker locks (``infra.store``), in that order."""
        await lock_partitions(conn, [(r.topic, r.partition) for r in records])
        await lock_workers(conn, (d.envelope.subject for d in decoded))

    async def load(self, conn: asyncpg.Connection, worker_ids: list[str]) -> dict[str, Aggregate]:
        """The stored aggregates of these workers (a new one for a worker never seen). The
        rows they were read from are kept for ``_sync_cross_worker``, by connection (a batch
        holds its connection from here to its write; the lanes run batches concurrently). A
        batch that failed in between leaves its entry: only the latest ``_LOADED_KEPT`` stay
        (a batch whose entry is gone writes every row, as before rows were compared)."""
        aggs = await load_aggregates(conn, worker_ids)
        loaded = getattr(aggs, "loaded", None)
        if loaded is not None:
            self._loaded[conn] = loaded
            while len(self._loaded) > _LOADED_KEPT:
                del self._loaded[next(iter(self._loaded))]
        return aggs

    async def write(self, conn: asyncpg.Connection, batch: BatchWrite) -> list[int]:
        """Write the batch (inside its transaction); returns the new outbox seqs."""
        return await write_batch(conn, batch, self.policy)

    def outputs_needed(self) -> bool:
        """Whether the handlers build the case and worker-state output events (they become
        outbox rows); always, live."""
        return True

    def logical_topic(self, full: str) -> str:
        """The logical name of an input topic (the full name if it is not one)."""
        return self._logical.get(full, full)

    async def _process_once(self, records: Sequence[RawRecord]) -> BatchReport:
        """One attempt at a batch: decode, then in one transaction lock, drop duplicates,
        apply the rules, sync the cross-worker tables and write everything; the log lines
        and metrics follow the commit."""
        run = _Run(self.clock(), BatchWrite(deadletter_topic=self.deadletter_topic))
        decoded = self._decode_all(records, run)
        self._note_sources_seen(decoded, run)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await self.lock(conn, records, decoded)
            todo = await self._first_deliveries(conn, decoded, run)
            await self._apply_all(conn, todo, run)
            await self._sync_cross_worker(conn, run)
            run.report.outbox_seqs = await self.write(conn, run.write)
            run.report.outbox_rows = [r for r in run.write.outbox if r.seq is not None]
            if self.hooks is not None:
                await self.hooks.enqueue(conn, run.write.outbox)
        self._after_commit(run)
        return run.report

    def _decode_all(self, records: Sequence[RawRecord], run: _Run) -> list[_Decoded]:
        """The batch's records in time order, decoded; the undecodable and invalid ones
        become dead letters of ``run``."""
        decoded: list[_Decoded] = []
        for rec in in_time_order(records):
            poison = undecodable_reason(rec.headers)
            if poison is not None:  # a batch the Kafka client could not decode
                self._dead_letter_undecodable(rec, poison, run)
                continue
            try:
                decoded.append(self._decode(rec))
            except InvalidEvent as exc:
                self._dead_letter_invalid(rec, exc, run)
        return decoded

    def _dead_letter_undecodable(self, rec: RawRecord, poison: tuple[str, int], run: _Run) -> None:
        reason, first = poison
        dl = self._dead_letter(rec, reason)
        dl.offset = first if first >= 0 else rec.offset
        dl.headers = []
        run.write.deadletters.append(dl)
        run.report.outcomes["undecodable"] += 1
        run.notes.append(
            (
                "error",
                "undecodable record dead-lettered",
                {
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": dl.offset,
                    "last_offset": rec.offset,
                    "error": reason,
                },
            )
        )

    def _dead_letter_invalid(self, rec: RawRecord, exc: InvalidEvent, run: _Run) -> None:
        run.write.deadletters.append(self._dead_letter(rec, str(exc)))
        topic = self.logical_topic(rec.topic)
        run.report.outcomes["invalid"] += 1
        run.report.labelled[(topic, None, "invalid")] += 1
        run.report.deadletters[(topic, "invalid")] += 1
        run.notes.append(
            (
                "warning",
                "invalid event dead-lettered",
                {
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                    "error": str(exc),
                },
            )
        )

    def _note_sources_seen(self, decoded: Sequence[_Decoded], run: _Run) -> None:
        """When each expected producer (policy ``[[sources]]``) last spoke, per partition."""
        seen = run.write.sources_seen
        expected, now = self._expected, run.now
        for d in decoded:
            source = d.envelope.source
            if source in expected:
                spoke = d.received_at
                if spoke is None or spoke > now:
                    spoke = now  # min(now, received_at or now)
                key = (source, d.record.partition)
                last = seen.get(key)
                if last is None or last < spoke:
                    seen[key] = spoke

    async def _first_deliveries(
        self, conn: asyncpg.Connection, decoded: Sequence[_Decoded], run: _Run
    ) -> list[_Decoded]:
        """The events not processed before (the first of each (source, id) in the batch);
        the others are counted as duplicates, or dead-lettered when their content differs."""
        each = [d.envelope.key for d in decoded]  # a tuple made per read: made once here
        known = await processed_digests(conn, list(dict.fromkeys(each)))
        todo: list[_Decoded] = []
        for d, key in zip(decoded, each, strict=True):
            if key not in known:
                known[key] = d.digest  # first occurrence only
                todo.append(d)
            elif known[key] not in (None, d.digest):
                self._dead_letter_conflict(d, run)
            else:
                topic = self.logical_topic(d.record.topic)
                run.report.outcomes["duplicate"] += 1
                run.report.labelled[(topic, d.envelope.type, "duplicate")] += 1
                run.notes.append(_handled(d.envelope, "duplicate"))
        return todo

    def _dead_letter_conflict(self, d: _Decoded, run: _Run) -> None:
        """Same (source, id), other content: a producer bug or an id claimed by someone else
        first. Never a silent duplicate."""
        env = d.envelope
        reason = (
            f"{DUPLICATE_CONFLICT}: ({env.source!r}, {env.id!r}) was processed "
            "before with other content"
        )
        run.write.deadletters.append(self._dead_letter(d.record, reason, env))
        topic = self.logical_topic(d.record.topic)
        run.report.outcomes["duplicate-conflict"] += 1
        run.report.labelled[(topic, env.type, "duplicate-conflict")] += 1
        run.report.deadletters[(topic, "duplicate-conflict")] += 1
        run.notes.append(_handled(env, "duplicate-conflict", level="warning"))

    async def _apply_all(
        self, conn: asyncpg.Connection, todo: Sequence[_Decoded], run: _Run
    ) -> None:
        """Load the workers' aggregates and apply each event in order; every event gets its
        processed-id row (with its outcome), the touched aggregates are kept for writing."""
        aggs = await self.load(conn, [d.envelope.subject for d in todo])
        watchlisted = await employers.load_watchlisted(
            conn, employers.batch_employer_keys(d.envelope for d in todo)
        )
        touched: dict[str, tuple[Aggregate, int]] = {}
        report = run.report
        for i, d in enumerate(todo):
            if i and not i % YIELD_EVERY:
                await asyncio.sleep(0)  # let the other lane's batch run (see YIELD_EVERY)
            env, rec = d.envelope, d.record
            outcome = self._apply(d, aggs, touched, run, watchlisted)
            report.outcomes[outcome] += 1
            topic = self.logical_topic(rec.topic)
            report.labelled[(topic, env.type, outcome)] += 1
            if outcome in ("rejected", "error"):
                report.deadletters[(topic, outcome)] += 1
            run.write.processed.append(
                ProcessedId(
                    env.source,
                    env.id,
                    env.type,
                    env.subject,
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    outcome,
                    d.digest,
                )
            )
        run.write.aggregates = list(touched.values())

    async def _sync_cross_worker(self, conn: asyncpg.Connection, run: _Run) -> None:
        """The cross-worker state of the batch, in its transaction: the employer watchlist
        (``infra.employers``) and the agency scorecard (``infra.agencies``).

        With the rows ``load`` read, the batch's state rows are made here
        (``infra.store.batch_state``: which rows differ from those read), for the syncs and
        the write: a case or a placement whose row did not change carries no new fact (its
        employer and agency rows were written with it). Every touched worker still names its
        employer (the employer's region is the latest a touched worker gives, as it always
        was). Without them (``garda rebuild``'s own loads): every touched worker and case."""
        aggregates = run.write.aggregates
        touched = [a.worker for a, _ in aggregates]
        loaded = self._loaded.pop(conn, None)
        if loaded is None:
            workers = touched
            cases = [c for a, _ in aggregates for c in a.cases.values()]
        else:
            state = run.write.state = batch_state(aggregates, self.policy, loaded)
            workers, cases = state.changed_workers, state.changed_cases
        for ev in await employers.sync(conn, touched, cases, self.policy):
            run.write.outbox.append(self.outbox_row(ev, run.now))
        for ev in await agencies.sync(conn, workers, cases, self.policy, run.now):
            run.write.outbox.append(self.outbox_row(ev, run.now))

    def _after_commit(self, run: _Run) -> None:
        """The batch committed: its log lines (written together, ``infra.logging.write_lines``),
        the totals and the metrics."""
        write_lines(_LOGGER, run.notes)
        self.totals.update(run.report.outcomes)
        run.report.record_metrics(self.clock())

    def _apply(
        self,
        d: _Decoded,
        aggs: dict[str, Aggregate],
        touched: dict[str, tuple[Aggregate, int]],
        run: _Run,
        watchlisted: frozenset[str] = frozenset(),
    ) -> str:
        """Apply one event to its worker's aggregate (``handlers.dispatch.handle``); its
        effects go to ``run``. Returns the outcome; a rejected event or a handler's bug
        becomes a dead letter (the worker's state stays as before the event)."""
        env, rec = d.envelope, d.record
        try:
            result = handle(
                aggs[env.subject],
                env,
                self.policy,
                run.now,
                received_at=d.received_at,
                watchlisted=watchlisted,
                outputs=self.outputs_needed(),
            )
        except Rejected as exc:
            run.write.deadletters.append(self._dead_letter(rec, f"rejected: {exc.reason}", env))
            run.notes.append(_handled(env, "rejected", level="warning", reason=exc.reason))
            return "rejected"
        except Exception as exc:  # a bug must not stop the worker nor lose the event
            run.write.deadletters.append(
                self._dead_letter(rec, f"internal error: {safe_error(exc)}", env)
            )
            log.exception(
                "event handled",
                event_id=env.id,
                type=env.type,
                worker_id=env.subject,
                outcome="error",
            )
            return "error"
        aggs[env.subject] = result.aggregate
        result.aggregate.exists = True
        touched[env.subject] = (result.aggregate, rec.partition)
        self._collect_effects(d, result.effects, run)
        run.notes.append(_handled(env, result.outcome))
        return result.outcome

    def _collect_effects(self, d: _Decoded, effects: Effects, run: _Run) -> None:
        """An applied event's timeline rows and output events into the batch write; the
        alerts and escalations it raised into the report."""
        env = d.envelope
        for entry in effects.timeline:
            run.write.timeline.append((entry, env.source, env.id))
        for ev in effects.events:
            if ev.type in ("garda.case.opened", "garda.case.escalated"):
                run.notes.append(_case_note(ev, env.subject))
            if ev.topic == topics.ALERTS:
                run.report.alerts[ev.type.removeprefix("garda.alert.")] += 1
                if ev.type == "garda.alert.escalated":
                    missed = ev.data.get("missed_deadline")
                    run.report.escalations.append(
                        (int(ev.data["level"]), parse_dt(missed) if missed else None)
                    )
            run.write.outbox.append(self.outbox_row(ev, run.now))


_CE_CONTENT_TYPE = ("content-type", b"application/cloudevents+json")


def _output_envelope(ev: OutputEvent, now: datetime) -> Envelope:
    """``Envelope(id=ev.id, source=GARDA_SOURCE, type=ev.type, subject=ev.subject or ev.key,
    data=ev.data, time=now)`` through ``Envelope.unchecked`` (no frozen ``__init__``, which
    cost more than ``encode`` itself): the handlers built the event, nothing to validate."""
    return Envelope.unchecked(ev.id, GARDA_SOURCE, ev.type, ev.subject or ev.key, ev.data, now)


def _case_note(ev: OutputEvent, worker_id: str) -> _Note:
    """The "case opened" / "case escalated" log line of an output event."""
    return (
        "info",
        ev.type.removeprefix("garda.").replace(".", " "),
        {
            "case_id": ev.data.get("case_id"),
            "worker_id": worker_id,
            "kind": ev.data.get("kind"),
            "category": ev.data.get("category"),
            "severity": ev.data.get("severity"),
            "post_id": ev.data.get("post_id"),
            "level": ev.data.get("escalation_level"),
        },
    )
