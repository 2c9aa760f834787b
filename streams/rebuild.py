"""``garda rebuild``: replay the input topics into an empty read model, streaming, in parallel.

The same ``BatchProcessor`` pipeline (decoding, dedup, the handlers, the employer and agency
syncs, one transaction per batch) as the live agent; only the locks, the reads and the
writes differ (``RebuildProcessor``: workers kept in memory between batches, COPY of the
rows an empty model cannot hold yet, no outbox rows), and a batch they refuse takes the
live writes.

Rules decided here (the design is silent):
- **Parallel by partition number.** Every input topic has the same partition count and is
  keyed by worker id with Kafka's default (murmur2) partitioner, so all of a worker's events
  sit in the same partition *number* of every input topic (the live agent relies on the same
  co-partitioning). Partition numbers are dealt round-robin to ``processes`` child processes
  (default: one per CPU, at most one per partition); each replays its partitions of every
  input topic with its own consumer and database pool. Workers never span two processes, so
  the processes share no state and need no coordination beyond the batch transactions.
  A producer with another partitioner can put one worker's events on two partition numbers:
  that stops a rebuild of several processes (see below); ``--processes 1`` handles it.
- **Streaming, in time order.** Within a process the topic-partitions are merged by Kafka
  timestamp (ties: topic, partition, offset; the order the old all-in-memory sort used), so
  a worker's events apply in the order they were first handled. A record is emitted only
  when every other topic-partition of the process has a buffered head or is exhausted (its
  position reached the fetch high-water mark: ListOffsets under-reports on some brokers).
  A topic-partition whose buffer holds ``BUFFER_LIMIT`` records is paused until it drains,
  so memory is bounded by the buffers and one batch, not by the size of the log.
- **Workers stay in memory between batches; their rows are written once.** A process owns
  its workers (their home partitions, see the first rule), so the aggregates a committed
  batch left are what the database would give back: a batch loads only the workers it does
  not hold (new ones: one query that finds nothing). The workers, cases and claims rows are
  written when a worker leaves the cache (least recently used, ``CACHE_WORKERS`` per
  process: memory stays bounded) in the transaction of the batch that evicts it, and the
  rest at the end of the replay (``RebuildProcessor.flush``); a worker met again after it
  left is loaded again and its rows replaced when it leaves again. About half the workers
  of a batch of the simulator's mix were seen in an earlier batch; each of them was deleted
  and COPYed again before. Timeline rows, processed ids, dead letters and the employer and
  agency tables are still committed per batch.
- **An interrupted rebuild is started again with ``--force``.** Until a process has flushed,
  the database holds processed ids whose workers' rows are not written yet: a crash (or a
  kill) mid-rebuild leaves a read model that is not one, and the next ``garda rebuild``
  refuses it as not empty until ``--force`` clears it and starts again (there is no resume).
  The database says so: a rebuild writes ``rebuild_in_progress`` (migration 016) when it
  starts and deletes it when it is done, and ``garda worker`` refuses to start while the
  row is there (a worker would take the processed ids as done and never write those
  workers' rows). The rebuild's result counts only once it says "done".
- **A case id is checked when the case opens, not when its row is written**: a new case
  whose id a cached worker or a stored row holds for another worker or post takes the live
  path (as live, the record is dead-lettered), so the deferred COPY never meets a conflict.
- **Records of another process's worker stop the rebuild.** With write-behind, a worker
  handled by two processes would be read stale by one of them; a record whose key's home
  partition is not one of the process's own (a producer with another partitioner) stops it
  with a message to run ``--processes 1`` (which owns every worker).
- One batch is in flight while the next is read (fetching, merging): the batch's
  PostgreSQL round trips overlap the reading, batches still apply one after another.
- Output events derived during the rebuild are not written to the outbox (they were
  published when the log was first processed; a batch that takes the live writes leaves its
  rows marked published); ``republish=True`` writes them unpublished, so they are sent again.
  Without it, a bulk attempt does not even build the worker-state snapshots that surely fit
  in a record (``handlers.context.Ctx.outputs``: one per changed event, ~5 µs of CPU per
  record); the case events and alerts are still built, for the size check and the report.
- A topic-partition is known to be exhausted as soon as its buffer empties at the fetch
  high-water mark (not after another fetch, which would wait for data that never comes).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import heapq
import multiprocessing as mp
import os
import queue
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from errors import CaseConflict, GardaError
from handlers.model import Aggregate, OutputEvent, Worker
from handlers.policy import Policy
from infra.bulk import (
    BulkRefused,
    case_owners,
    load_stored,
    mark_rebuild_done,
    mark_rebuild_started,
    rebuild_started_at,
    write_history,
    write_state,
)
from infra.db import Database, migrate
from infra.faults import is_retriable
from infra.gctune import tune_for_throughput
from infra.logging import configure_logging, get_logger, safe_error
from infra.settings import Settings
from infra.store import MAX_RECORD_BYTES, BatchWrite, OutboxRow, lock_partitions
from schemas import topics
from streams.processor import BatchProcessor, BatchReport, Clock, RawRecord, _Decoded, utcnow
from streams.undecodable import guard_fetcher, undecodable_reason

log = get_logger("garda.rebuild")

READ_MODEL_TABLES = (
    "workers",
    "cases",
    "claims",
    "case_timeline",
    "processed_events",
    "deadletters",
    "outbox",
    # prevention and aftercare: cross-worker state rebuilt from the same events
    "employers",
    "employer_cases",
    "agency_placements",
    "agency_cases",
)
# Records per batch (one transaction). Large: a batch's ~30 round trips to PostgreSQL and its
# per-batch work (locks, loading the stored workers, the employer and agency syncs) are paid
# once per batch, and fewer workers are written again by a later batch. Memory stays small
# (the records and the touched aggregates of one batch).
BATCH_SIZE = 10_000
# Workers kept in memory per rebuild process between batches (their rows are written when
# they leave, or at the end). An aggregate of the simulator's mix takes ~4.5 KB
# (tracemalloc, 45,000 workers) and grows with its history; the cache also shrinks (by a
# tenth per batch, to no fewer than CACHE_FLOOR workers) while the process's resident set
# is above RSS_BUDGET, so two processes and their parent stay under 1 GB however long the
# log (docs/benchmarks.md).
CACHE_WORKERS = 40_000
CACHE_FLOOR = 2_000
# 440 MB per process let the tree reach 1,045 MB at 1,000,000 events (two processes, the
# parent, and a process's peak within a batch above its budget): 300 MB keeps it well
# under 1 GB.
RSS_BUDGET = 300 << 20  # bytes per rebuild process
# Batches between two (full) collections of the cyclic garbage collector during a replay
# (it does not run on allocation counts there, see ``_replay``): a bound on what cyclic
# garbage can pile up (~0.5 s per collection with 40,000 cached workers).
GC_EVERY_BATCHES = 20
BUFFER_LIMIT = 2_000  # records buffered per topic-partition before it is paused
FETCH_BYTES = 1 << 20  # per partition and fetch
_NOT_WRITTEN = OutboxRow(event_id="", topic="", key=None, value=b"")


class _LivePathNeeded(GardaError):
    retriable = False


def home_partition(worker_id: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives the key ``worker_id``
    (``aiokafka.partitioner.DefaultPartitioner``: the hash's low 31 bits modulo the count)."""
    return (murmur2(worker_id.encode()) & 0x7FFFFFFF) % max(1, partitions)


def _surely_fits(ev: OutputEvent) -> bool:
    """Whether ``ev``'s outbox row is certainly under ``MAX_RECORD_BYTES`` (its JSON, six
    bytes per character at worst, plus room for the envelope), without encoding it."""
    try:
        size = len(orjson.dumps(ev.data)) + len(ev.id) + len(ev.type) + 2 * len(ev.key)
    except TypeError:  # not orjson's JSON: let the live path encode it (or refuse it)
        return False
    return 6 * size + 8192 < MAX_RECORD_BYTES


@dataclass(slots=True)
class _Cached:
    """A worker kept between batches: its aggregate as the last committed batch left it."""

    agg: Aggregate
    partition: int | None  # the input partition of its latest event (the rows' ``partition``)
    dirty: bool  # changed since its rows were last written
    stored: bool  # it has rows in the database (deleted before they are written again)


@dataclass
class _Pending:
    """What the cache takes once the batch's transaction has committed."""

    touched: list[tuple[Aggregate, int | None]] = field(default_factory=list)
    loaded: dict[str, Aggregate] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)
    new_cases: list[tuple[str, str, str]] = field(default_factory=list)  # (case, worker, post)
    written: bool = False  # the touched rows were written (the live path), not kept dirty


class ForeignWorker(GardaError):
    """A record whose worker's home partition belongs to another rebuild process."""

    retriable = False


class RebuildProcessor(BatchProcessor):
    """The live ``BatchProcessor`` (decoding, dedup, handlers, the employer and agency
    syncs, dead letters, one transaction per batch) with the rebuild's own locks, reads and
    writes.

    Workers are kept between batches (``cache_workers`` of them, least recently used out
    first) and their rows written once, when they leave the cache or at the end
    (``flush``): a batch loads only the workers it does not hold, and COPYs its timeline
    rows, processed ids and the rows of the workers it evicts (``infra.bulk``); no outbox
    rows (their output events were published when the log was first processed) unless
    ``republish``. A batch the bulk write refuses (a new case whose id is stored for another
    worker or post, an output event that may be too large to publish) is rolled back and
    goes through the live writes (upserts of its touched workers), so its result is live's;
    so does a batch of one record (the live path's record-by-record retry of a failed batch).
    ``bulk=False``: live's loads and writes for every batch, no cache (the reference in
    tests).
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        policy: Policy,
        *,
        republish: bool = False,
        bulk: bool = True,
        clock: Clock = utcnow,
        partitions: int | None = None,
        owned: Collection[int] | None = None,
        cache_workers: int = CACHE_WORKERS,
    ) -> None:
        super().__init__(db, settings, policy, clock=clock)
        self.partitions = partitions or settings.partitions  # of each input topic
        self.republish = republish
        self.bulk = bulk  # False: live's writes for every batch (the reference in tests)
        self.live_batches = 0  # batches the bulk write refused
        self.reloads = 0  # workers loaded again after they left the cache
        self.owned = None if owned is None else frozenset(owned)  # home partitions (None: all)
        self.cache_workers = max(1, cache_workers)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._owners: dict[str, str] = {}  # case id -> worker, for the cached workers' cases
        self._homes: dict[str, int] = {}
        # worker -> its aggregate before the batch (``handle`` never changes the aggregate it
        # is given, so this holds the cases as they were)
        self._before: dict[str, Aggregate] = {}
        self._pending = _Pending()
        self._lean = False
        self._oversized = False
        self.batches_applied = 0  # by ``_apply`` (the replay's collector schedule)

    def home(self, worker_id: str) -> int:
        h = self._homes.get(worker_id)
        if h is None:
            if len(self._homes) > 100_000:  # a memo, not a record
                self._homes.clear()
            h = self._homes[worker_id] = home_partition(worker_id, self.partitions)
        return h

    async def process(self, records: Sequence[RawRecord]) -> BatchReport:
        """As live; a record whose worker's home partition belongs to another rebuild process
        (a producer with another partitioner) stops the rebuild: that process may hold the
        worker's newer state in its cache (``ForeignWorker``; ``--processes 1`` owns every
        worker). Checked on the record keys (a key that is not its event's subject is an
        invalid event, dead-lettered)."""
        if self.bulk and self.owned is not None:
            for raw in {rec.key for rec in records}:  # each key once
                try:
                    key = raw.decode() if raw is not None else None
                except UnicodeDecodeError:
                    continue
                if key is not None and self.home(key) not in self.owned:
                    rec = next(r for r in records if r.key == raw)
                    raise ForeignWorker(
                        f"worker {key!r} has events on {rec.topic} partition {rec.partition},"
                        f" not only on {self.home(key)} where Kafka's default (murmur2)"
                        " partitioner puts its id; rebuild with --force --processes 1"
                    )
        return await super().process(records)

    async def lock(
        self, conn: asyncpg.Connection, records: Sequence[RawRecord], decoded: list[_Decoded]
    ) -> None:
        """The partition locks, then one lock per *home partition* of the batch's workers
        (where Kafka's default partitioner puts a worker id), not live's hash buckets.

        Every rebuild process locks the home partition of every worker it touches, so two
        processes never work on one worker at once. With co-partitioned topics a process's
        workers all live in its own partitions, so the processes never wait for each other
        (live's 256 buckets made them take turns: a batch of 5,000 events takes nearly every
        bucket). A process that owns every worker (``--processes 1``) locks every home
        partition: the same exclusion, without hashing each new worker id (murmur2 in
        Python, ~6 µs).
        """
        await lock_partitions(conn, {(r.topic, r.partition) for r in records})
        if decoded:
            owners = () if self.owned is None else {d.envelope.subject for d in decoded}
            await self._lock_homes(conn, owners)

    async def _lock_homes(self, conn: asyncpg.Connection, worker_ids: Collection[str]) -> None:
        """Lock the home partitions of ``worker_ids`` (all of them in a process that owns
        every worker: no hashing), in ascending order."""
        if self.owned is None:
            homes = list(range(self.partitions))
        else:
            home = self.home
            homes = sorted({home(w) for w in worker_ids})
        await conn.execute(
            "SELECT pg_advisory_xact_lock(7305, p) FROM unnest($1::int[]) AS p ORDER BY p",
            homes,
        )

    async def load(self, conn: asyncpg.Connection, worker_ids: list[str]) -> dict[str, Aggregate]:
        if not self.bulk:
            return await super().load(conn, worker_ids)
        aggs: dict[str, Aggregate] = {}
        missing: list[str] = []
        for w in dict.fromkeys(worker_ids):
            hit = self._cache.get(w)
            if hit is None:
                missing.append(w)
            else:
                aggs[w] = hit.agg
        loaded = await load_stored(conn, missing)
        self.reloads += len(loaded)
        for w in missing:
            aggs[w] = loaded.get(w) or Aggregate(worker=Worker(worker_id=w))
        self._pending.loaded = loaded
        self._before = aggs.copy()
        return aggs

    def outputs_needed(self) -> bool:
        """Not in a bulk attempt without ``republish``: its output events are never written
        (the handlers only count them, so the alerts keep live's ids); a batch that takes
        the live writes builds them all."""
        return not self._lean or self.republish

    def outbox_row(self, ev: OutputEvent, now: datetime) -> OutboxRow:
        if not self._lean or self.republish:
            return super().outbox_row(ev, now)
        if not _surely_fits(ev):
            self._oversized = True  # the live path encodes it and refuses it if too large
        return _NOT_WRITTEN

    def _new_cases(self, batch: BatchWrite) -> list[tuple[str, str, str]]:
        """(case id, worker, post) of the cases the batch opened (a worker whose case ids
        are those it had before the batch opened none: one comparison, in C)."""
        before = self._before
        new: list[tuple[str, str, str]] = []
        for a, _ in batch.aggregates:
            w = a.worker.worker_id
            b = before.get(w)
            old = b.cases if b is not None else {}
            if a.cases.keys() == old.keys():
                continue
            new.extend((c.case_id, w, c.post_id) for c in a.cases.values() if c.case_id not in old)
        return new

    def _held_elsewhere(self, new: list[tuple[str, str, str]]) -> str | None:
        """A new case id that a cached worker (not yet written, maybe) or another worker of
        the batch already holds: live would refuse it (its rows would be stored first)."""
        seen: dict[str, str] = {}
        for cid, worker, _ in new:
            owner = self._owners.get(cid) or seen.setdefault(cid, worker)
            if owner != worker:
                return cid
        return None

    async def write(self, conn: asyncpg.Connection, batch: BatchWrite) -> list[int]:
        if not self.bulk:
            return await super().write(conn, batch)
        new = self._new_cases(batch)
        clash = self._held_elsewhere(new)
        pending = self._pending
        pending.touched = list(batch.aggregates)
        pending.new_cases = new
        if not self._lean:
            if clash is not None:
                raise CaseConflict(f"case {clash} already exists for another worker; not moved")
            pending.written = True
            return await super().write(conn, batch)
        if clash is not None:
            raise BulkRefused(f"case {clash} would move to another worker")
        stored = await case_owners(conn, [cid for cid, _, _ in new])
        for cid, worker, post in new:
            if stored.get(cid, (worker, post)) != (worker, post):
                # live refuses it (CaseConflict) and dead-letters the record
                raise BulkRefused(f"case {cid} would move to another worker or post")
        if self._oversized:
            raise _LivePathNeeded("an output event may exceed the record size limit")
        await self._evict(conn, batch)
        return await write_history(conn, batch, outbox=self.republish)

    async def _evict(self, conn: asyncpg.Connection, batch: BatchWrite) -> None:
        """Write the rows of the least recently used workers the cache must give up for
        this batch's (in the batch's transaction; they leave the cache once it commits)."""
        rss = _resident_bytes()
        if rss is not None and rss > RSS_BUDGET and self.cache_workers > CACHE_FLOOR:
            self.cache_workers = max(CACHE_FLOOR, self.cache_workers * 9 // 10)
        if (
            len(self._cache) + len(batch.aggregates) + len(self._pending.loaded)
            <= self.cache_workers
        ):
            return  # room for every worker of the batch, even if none is cached yet
        here = {a.worker.worker_id for a, _ in batch.aggregates} | set(self._pending.loaded)
        over = len(self._cache) + len(here - self._cache.keys()) - self.cache_workers
        if over <= 0:
            return
        victims: list[str] = []
        for w in self._cache:
            if len(victims) >= over:
                break
            if w not in here:
                victims.append(w)
        out = [self._cache[w] for w in victims]
        dirty = [e for e in out if e.dirty]
        await write_state(
            conn,
            [(e.agg, e.partition) for e in dirty],
            self.policy,
            replace=[e.agg.worker.worker_id for e in dirty if e.stored],
        )
        self._pending.evicted = victims

    async def _process_once(self, records: Sequence[RawRecord]) -> BatchReport:
        if self.bulk and len(records) > 1:
            self._lean, self._oversized = True, False
            try:
                return await self._attempt(records)
            except Exception as exc:
                if is_retriable(exc) or isinstance(exc, ForeignWorker):
                    raise
                self.live_batches += 1
                log.warning(
                    "rebuild: the bulk write refused a batch; it goes through the live path",
                    error=safe_error(exc),
                    records=len(records),
                )
            finally:
                self._lean = False
        return await self._attempt(records)

    async def _attempt(self, records: Sequence[RawRecord]) -> BatchReport:
        """One attempt; the cache takes the batch's workers only once it has committed."""
        self._pending = _Pending()
        try:
            report = await super()._process_once(records)
            if self.bulk:
                self._commit_cache(self._pending)
        finally:
            # The aggregates as the batch found them are not kept until the next batch.
            self._pending, self._before = _Pending(), {}
        return report

    def _commit_cache(self, p: _Pending) -> None:
        """The committed batch's workers join the cache (most recently used last), the
        evicted ones leave it. ``_owners`` holds every case of every cached worker: a worker
        entering the cache registers all its cases, a cached one only those the batch
        opened (cases never leave a worker)."""
        cache, owners = self._cache, self._owners
        for w in p.evicted:
            entry = cache.pop(w)
            for cid in entry.agg.cases:
                owners.pop(cid, None)
        for w, agg in p.loaded.items():
            if w not in cache:
                cache[w] = _Cached(agg, None, dirty=False, stored=True)
                for cid in agg.cases:
                    owners[cid] = w
        dirty = not p.written
        for agg, partition in p.touched:
            w = agg.worker.worker_id
            prev = cache.get(w)
            if prev is None:
                cache[w] = _Cached(agg, partition, dirty=dirty, stored=p.written)
                for cid in agg.cases:
                    owners[cid] = w
            else:
                prev.agg, prev.partition, prev.dirty = agg, partition, dirty
                prev.stored = prev.stored or p.written
                cache.move_to_end(w)
        for cid, w, _ in p.new_cases:
            owners[cid] = w

    async def flush(self, chunk: int = 5_000) -> int:
        """Write the rows of every cached worker not written since it changed (the end of a
        replay), ``chunk`` workers per transaction; returns how many were written."""
        dirty = [e for e in self._cache.values() if e.dirty]
        for i in range(0, len(dirty), chunk):
            part = dirty[i : i + chunk]
            async with self.db.pool.acquire() as conn, conn.transaction():
                await self._lock_homes(conn, [e.agg.worker.worker_id for e in part])
                await write_state(
                    conn,
                    [(e.agg, e.partition) for e in part],
                    self.policy,
                    replace=[e.agg.worker.worker_id for e in part if e.stored],
                )
            for e in part:
                e.dirty, e.stored = False, True
        return len(dirty)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    """This process's resident set (Linux ``/proc``; None elsewhere: no shrinking)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _libc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


_TRIM = _libc_trim()


def _release_freed_memory() -> None:
    """Give the memory a batch freed back to the system (glibc's ``malloc_trim``): the
    batch's short-lived objects otherwise leave the heap at its peak, and a long replay's
    resident set crept up with it (in-process over 150,000 records: peak 498 -> 428 MB)."""
    if _TRIM is not None:
        _TRIM(0)


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_wait_ms=100,
    )


async def _partitions(settings: Settings) -> dict[str, list[int]]:
    """Input topic name -> its partition numbers."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()
        return {
            settings.topic(t): sorted(consumer.partitions_for_topic(settings.topic(t)) or [])
            for t in topics.INPUTS
        }
    finally:
        await consumer.stop()


async def merged_records(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], *, buffer_limit: int = BUFFER_LIMIT
) -> AsyncIterator[RawRecord]:
    """Every record of ``parts`` up to their high-water marks, merged by timestamp."""
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    buffers: dict[TopicPartition, deque] = {tp: deque() for tp in parts}
    active = set(parts)  # not yet known to be exhausted
    paused: set[TopicPartition] = set()
    heads: list[tuple] = []  # (timestamp, topic, partition, offset, tp) of each buffered head
    in_heap: set[TopicPartition] = set()
    # The active topic-partitions without a head in ``heads``: the merge is exact (a record
    # may be emitted) only while there is none (a set kept up to date, not a scan of
    # ``active`` per record).
    headless = set(parts)
    last_ts: dict[TopicPartition, int] = {}  # the latest record timestamp seen per partition
    idle = 0

    async def exhausted(tp: TopicPartition) -> bool:
        hw = consumer.highwater(tp)
        return hw is not None and await consumer.position(tp) >= hw

    def push_head(tp: TopicPartition) -> None:
        m = buffers[tp][0]
        heapq.heappush(heads, (m.timestamp or 0, tp.topic, tp.partition, m.offset, tp))
        in_heap.add(tp)
        headless.discard(tp)

    def retire(tp: TopicPartition) -> None:
        active.discard(tp)
        headless.discard(tp)

    while active or heads:
        # Emit while every active topic-partition has a head (the merge is then exact).
        while heads and not headless:
            *_, tp = heapq.heappop(heads)
            in_heap.discard(tp)
            if tp in active:
                headless.add(tp)
            m = buffers[tp].popleft()
            yield RawRecord(
                m.topic,
                m.partition,
                m.offset,
                m.key,
                m.value,
                list(m.headers or []),
                m.timestamp / 1000 if m.timestamp is not None else None,
            )
            if buffers[tp]:
                push_head(tp)
            elif tp in active and await exhausted(tp):
                # Known at once (not after the next fetch, which waits for data that will
                # not come): the merge goes on without it.
                retire(tp)
            if tp in paused and len(buffers[tp]) < buffer_limit // 2:
                consumer.resume(tp)
                paused.discard(tp)
        if not active:
            continue
        batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
        got = 0
        for tp, msgs in batch.items():
            got += len(msgs)
            buf = buffers[tp]
            for m in msgs:
                if m.headers and undecodable_reason(m.headers) is not None:
                    # A marker (an undecodable batch) is stamped when it was made: it takes
                    # its predecessor's time so that it does not hold its partition back.
                    m = dataclasses.replace(m, timestamp=last_ts.get(tp, 0))
                else:
                    last_ts[tp] = m.timestamp or 0
                buf.append(m)
            if tp not in in_heap and buf:
                push_head(tp)
            if len(buf) >= buffer_limit and tp not in paused:
                consumer.pause(tp)
                paused.add(tp)
        for tp in list(active):
            if not buffers[tp] and await exhausted(tp):
                retire(tp)
        idle = 0 if got else idle + 1
        if idle >= 20:  # 10 s without a record while partitions seem unfinished
            log.warning(
                "rebuild: no records for 10 s; treating the remaining partitions as done",
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in active),
            )
            active.clear()
            headless.clear()


async def _replay(
    settings: Settings,
    policy: Policy,
    numbers: list[int],
    *,
    batch_size: int,
    republish: bool,
    report: Any = None,
    bulk: bool = True,
    clock: Clock = utcnow,
    cache_workers: int = CACHE_WORKERS,
    stats: dict[str, int] | None = None,
) -> tuple[Counter, int]:
    """Replay partition ``numbers`` of every input topic; returns (outcome totals, records).
    ``stats`` (if given) receives the processor's counts: batches the bulk write refused,
    workers loaded again after they left the cache, workers written at the end."""
    names = [settings.topic(t) for t in topics.INPUTS]
    # The garbage collector does not run on allocation counts during the replay, only every
    # ``GC_EVERY_BATCHES`` batches (``_apply``): the replay makes almost no cyclic garbage
    # (a final collection found 946 objects after 100,500 records), while the collections
    # the counts set off kept scanning each batch's objects and the cached aggregates
    # (1.5 s of 11.6 s of CPU, even with ``infra.gctune``'s thresholds).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return await _replay_records(
            settings,
            policy,
            names,
            numbers,
            batch_size=batch_size,
            republish=republish,
            report=report,
            bulk=bulk,
            clock=clock,
            cache_workers=cache_workers,
            stats=stats,
        )
    finally:
        if collecting:
            gc.enable()


async def _replay_records(
    settings: Settings,
    policy: Policy,
    names: list[str],
    numbers: list[int],
    *,
    batch_size: int,
    republish: bool,
    report: Any,
    bulk: bool,
    clock: Clock,
    cache_workers: int,
    stats: dict[str, int] | None,
) -> tuple[Counter, int]:
    async with Database(settings.database_url or "", max_size=2) as db:
        consumer = _consumer(settings)
        await consumer.start()
        # A batch the client cannot decode becomes a marker record (a dead letter), as live.
        guard_fetcher(consumer)
        try:
            await consumer.topics()
            parts = [
                TopicPartition(n, p)
                for n in names
                for p in sorted(consumer.partitions_for_topic(n) or [])
                if p in numbers
            ]
            total = len(consumer.partitions_for_topic(names[0]) or [])
            processor = RebuildProcessor(
                db,
                settings,
                policy,
                republish=republish,
                bulk=bulk,
                clock=clock,
                partitions=total or None,
                owned=None if set(range(total)) <= set(numbers) else numbers,
                cache_workers=cache_workers,
            )
            # One batch in flight while the next is read: its PostgreSQL round trips overlap
            # the fetching and merging of the next (batches still apply one after another).
            chunk: list[RawRecord] = []
            count = 0
            running: asyncio.Task | None = None
            try:
                async for rec in merged_records(consumer, parts):
                    count += 1
                    chunk.append(rec)
                    if len(chunk) >= batch_size:
                        if running is not None:
                            await running
                        running = asyncio.ensure_future(
                            _apply(db, processor, chunk, republish, report)
                        )
                        chunk = []
                if running is not None:
                    await running
                    running = None
                if chunk:
                    await _apply(db, processor, chunk, republish, report)
                flushed = await processor.flush()
                if stats is not None:
                    stats.update(
                        live_batches=processor.live_batches,
                        reloads=processor.reloads,
                        flushed=flushed,
                    )
            finally:
                if running is not None and not running.done():
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
        finally:
            await consumer.stop()
        return Counter(processor.totals), count


async def _apply(
    db: Database, processor: RebuildProcessor, chunk: list[RawRecord], republish: bool, report: Any
) -> None:
    result = await processor.process(chunk)
    if not republish and result.outbox_seqs:
        async with db.pool.acquire() as conn:
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE seq = ANY($1)", result.outbox_seqs
            )
    processor.batches_applied += 1
    if not processor.batches_applied % GC_EVERY_BATCHES:
        gc.collect()
    _release_freed_memory()
    if report is not None:
        report(len(chunk))


def _child(
    settings: Settings,
    policy: Policy,
    numbers: list[int],
    batch_size: int,
    republish: bool,
    progress: Any,
    results: Any,
) -> None:
    """One rebuild process (spawned): replays its partition numbers, reports to the parent.
    The garbage collector is tuned as in the live worker (``infra.gctune``): with the
    cache's aggregates alive, every full collection walked them all (a quarter of the
    process's CPU, in-process over 50,000 records)."""
    configure_logging(settings.log_format, settings.log_level)
    tune_for_throughput()
    try:
        totals, count = asyncio.run(
            _replay(
                settings,
                policy,
                numbers,
                batch_size=batch_size,
                republish=republish,
                report=progress.put,
            )
        )
        results.put(("ok", (dict(totals), count)))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


async def rebuild(
    settings: Settings,
    policy: Policy,
    *,
    batch_size: int = BATCH_SIZE,
    force: bool = False,
    republish: bool = False,
    progress: bool = True,
    processes: int | None = None,
) -> dict[str, Any]:
    if not settings.database_url:
        raise GardaError("garda rebuild needs GARDA_DATABASE_URL")
    async with Database(settings.database_url, max_size=1) as db:
        async with db.pool.acquire() as conn:
            await migrate(conn)
            present = await conn.fetchval("SELECT count(*) FROM processed_events")
            interrupted = await rebuild_started_at(conn)
            if (present or interrupted) and not force:
                what = (
                    f"an interrupted garda rebuild (started {interrupted:%Y-%m-%d %H:%M} UTC)"
                    f" left it incomplete"
                    if interrupted
                    else f"it is not empty ({present} processed events)"
                )
                raise GardaError(
                    f"the read model cannot be rebuilt as it is: {what}; rebuild into an "
                    "empty database, or pass --force to clear it first"
                )
            if present:
                await conn.execute(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}")
            await mark_rebuild_started(conn)
    numbers = sorted({p for ps in (await _partitions(settings)).values() for p in ps})
    k = max(1, min(processes or os.cpu_count() or 1, len(numbers) or 1))
    groups = [numbers[i::k] for i in range(k)]
    started = time.monotonic()
    if k == 1:
        # Tuned as in the partition processes (``_child``): this process replays everything.
        tune_for_throughput()
        done = 0
        last = time.monotonic()

        def count(n: int) -> None:
            nonlocal done, last
            done += n
            if progress and time.monotonic() - last > 1:
                last = time.monotonic()
                print(f"rebuild: applied {done} records", file=sys.stderr, flush=True)

        totals, records = await _replay(
            settings, policy, numbers, batch_size=batch_size, republish=republish, report=count
        )
    else:
        totals, records = await asyncio.to_thread(
            _run_children, settings, policy, groups, batch_size, republish, progress
        )
    elapsed = time.monotonic() - started
    async with Database(settings.database_url, max_size=1) as db:
        async with db.pool.acquire() as conn:
            await mark_rebuild_done(conn)
    if progress:
        rate = records / elapsed if elapsed > 0 else 0
        print(
            f"rebuild: done, {records} records in {elapsed:.1f}s ({rate:.0f}/s, "
            f"{k} processes): {dict(totals)}",
            file=sys.stderr,
            flush=True,
        )
    log.info("rebuild finished", records=records, seconds=round(elapsed, 2), processes=k, **totals)
    return {"records": records, "seconds": round(elapsed, 3), "processes": k, **totals}


def _run_children(
    settings: Settings,
    policy: Policy,
    groups: list[list[int]],
    batch_size: int,
    republish: bool,
    show: bool,
) -> tuple[Counter, int]:
    ctx = mp.get_context("spawn")
    progress_q, results_q = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            args=(settings, policy, g, batch_size, republish, progress_q, results_q),
            name=f"garda-rebuild-{i}",
        )
        for i, g in enumerate(groups)
    ]
    for p in procs:
        p.start()
    totals: Counter = Counter()
    errors: list[str] = []
    finished = done = records = 0
    last = time.monotonic()
    try:
        while finished < len(procs):
            try:
                status, value = results_q.get(timeout=0.2)
                finished += 1
                if status == "ok":
                    totals.update(value[0])
                    records += value[1]
                else:
                    errors.append(value)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) and results_q.empty():
                    dead = [p.name for p in procs if p.exitcode not in (None, 0)]
                    time.sleep(0.5)  # its last message may still be in flight
                    if results_q.empty():
                        errors.append(f"rebuild process died: {', '.join(dead)}")
                        break
            while True:
                try:
                    done += progress_q.get_nowait()
                except queue.Empty:
                    break
            if show and time.monotonic() - last > 1:
                last = time.monotonic()
                print(f"rebuild: applied {done} records", file=sys.stderr, flush=True)
    finally:
        for p in procs:
            p.join(timeout=30 if not errors else 1)
            if p.is_alive():
                p.terminate()
                p.join()
    if errors:
        raise GardaError("rebuild failed: " + "; ".join(errors))
    return totals, records
