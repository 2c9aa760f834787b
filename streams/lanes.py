"""The two processing lanes: urgent reports never wait behind a bulk feed.

Each lane is a task of the Faust app over its own input topics, with its own buffer
(``LaneBuffer``), and hands batches to the shared ``BatchProcessor`` (one PostgreSQL
transaction per batch; the offsets of a batch are released for commit only after its
transactions committed):

- **urgent**: ``pmi.incidents.v1`` (an SOS report), ``pmi.case-actions.v1`` (responders'
  acknowledgements, which a deadline must not overtake) and ``garda.commands.v1`` (the
  timers' deadline commands);
- **bulk**: ``pmi.departures.v1`` and ``pmi.claims.v1`` (registration and insurer feeds that
  arrive in large backlogs).

Rules decided where the design is silent:
- The bulk lane yields to the urgent one (``UrgentFirst``): it starts a transaction only while
  no urgent batch is being processed, and while urgent work has been seen in the last
  ``URGENT_QUIET`` seconds it processes its batch in steps, one transaction each, so that an
  urgent batch waits for at most one small step (for the event loop, and for the per-worker
  locks a bulk transaction holds). A step is as many records as the recent bulk
  transactions handled in ``GARDA_BULK_STEP_SECONDS`` (0.05 s; an average over the last
  steps, at least ``BULK_MIN_STEP`` records): on a quiet machine ~200 records, fewer when
  the machine is loaded, so an urgent batch waits about as long either way. A fixed step of
  50 records cost a backlog ~10 % of its throughput on a quiet machine (steps of 250: 3,305 ->
  3,597 events/s, incident p99 during a claims backlog 262 -> 229 ms); 0 keeps the fixed
  ``BULK_STEP``. The batch's offsets are
  released only after its last step committed; a step that committed before a crash is
  read again and deduplicated (``processed_events``), like any replay.
- Urgent records are also first in the consumer (``streams.transport``): of what the
  fetcher holds, the urgent partitions' records are handed out first, and while urgent work
  is about at most ``BULK_HANDOUT`` bulk records per call; a partition's fetch is at most
  128 KB (``streams.app.FETCH_BYTES_PER_PARTITION``), so a fetch round full of claims does
  not delay the incidents that come with the next one.
- Records reach a lane a whole fetch at a time: Faust's consumer loop
  (``streams.transport``) puts each record of a lane's topics in the lane's buffer instead
  of handing it to an agent through the conductor, an event, two tasks and a stream queue
  (about 200 µs per record, as much as Garda's whole pipeline). A batch takes every record
  buffered (up to ``GARDA_BATCH_SIZE``), after waiting ``GARDA_BATCH_WITHIN`` when fewer
  were there: a lane behind catches up in a few big batches. The batch's records are
  tracked and acked through Faust's consumer as an agent's events are, so commits,
  rebalances (which wait for a batch in progress) and shutdown behave as before.
- One worker's events on two lanes are serialised by the per-worker advisory locks of the
  batch transaction (``infra.store.lock_workers``); the partition locks are per
  topic-partition, so the two lanes do not wait for each other on a partition number.
- Each topic-partition is read by one lane, in order; the order between a worker's events on
  different topics was already not guaranteed across batches, and the processor reconciles
  it (a departure arriving after an incident, a claim filed before its incident).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import faust

from infra.logging import get_logger
from schemas import topics
from streams.processor import RawRecord

log = get_logger("garda.lanes")

URGENT_TOPICS = (topics.INCIDENTS, topics.CASE_ACTIONS, topics.COMMANDS)
BULK_TOPICS = (topics.DEPARTURES, topics.CLAIMS)
assert sorted(URGENT_TOPICS + BULK_TOPICS) == sorted(topics.INPUTS), "every input in one lane"

BULK_STEP = 50  # records per bulk transaction while urgent work is about (before any is timed)
BULK_MIN_STEP = 10  # the smallest step however slow the bulk transactions are
URGENT_QUIET = 2.0  # seconds without urgent work before the bulk lane takes whole batches
_SMOOTHING = 0.3  # weight of the latest bulk transaction in the seconds-per-record average


class UrgentFirst:
    """The priority between the lanes (one per process; both lanes run on one event loop)."""

    def __init__(
        self,
        *,
        step: int = BULK_STEP,
        quiet: float = URGENT_QUIET,
        step_seconds: float = 0.0,
        min_step: int = BULK_MIN_STEP,
    ) -> None:
        self.step = step
        self.quiet = quiet
        self.step_seconds = step_seconds  # 0: the fixed ``step``
        self.min_step = min_step
        self._per_record: float | None = None  # seconds, the bulk transactions' average
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_urgent = float("-inf")
        self.bulk_waits = 0  # times the bulk lane waited for an urgent batch (for tests, logs)

    def urgent_seen(self) -> None:
        """Urgent records were fetched (also called from the consumer's thread)."""
        self._last_urgent = time.monotonic()

    def urgent_started(self) -> None:
        self._busy += 1
        self._idle.clear()
        self._last_urgent = time.monotonic()

    def urgent_done(self) -> None:
        self._busy -= 1
        self._last_urgent = time.monotonic()
        if self._busy == 0:
            self._idle.set()

    @property
    def urgent_about(self) -> bool:
        """An urgent batch is in progress or ended less than ``quiet`` seconds ago."""
        return self._busy > 0 or time.monotonic() - self._last_urgent < self.quiet

    def bulk_took(self, records: int, seconds: float) -> None:
        """A bulk transaction of ``records`` took ``seconds`` (from its start to its commit)."""
        if records <= 0 or seconds < 0:
            return
        latest = seconds / records
        prev = self._per_record
        self._per_record = latest if prev is None else prev + _SMOOTHING * (latest - prev)

    @property
    def current_step(self) -> int:
        """Records per bulk transaction while urgent work is about."""
        if not self.step_seconds or self._per_record is None:
            return self.step
        if self._per_record <= 0:
            return max(self.min_step, self.step)
        return max(self.min_step, int(self.step_seconds / self._per_record))

    async def bulk_turn(self, remaining: int) -> int:
        """Wait until no urgent batch is in progress; how many records the bulk lane may put
        in its next transaction (of ``remaining``)."""
        if not self._idle.is_set():
            self.bulk_waits += 1
            await self._idle.wait()
        return min(remaining, self.current_step) if self.urgent_about else remaining


class LaneBuffer:
    """The records the consumer delivered to one lane, waiting for the lane's next batch.

    Filled by the consumer's delivery loop (``streams.transport``) with every record of a
    fetch at once, emptied by the lane a batch at a time: no per-record task, event or
    queue hop. A partition whose records fill the buffer past ``limit`` stops being fetched
    (Faust's ``on_buffer_full``) until the lane has taken the buffer below half of it, so
    a backlog is held in the broker, not in memory, and the delivery loop never waits for
    one lane (which would hold the other one too). Registered with Faust's flow control,
    which clears it when a rebalance starts and ends, as it clears an agent's queue; what
    was cleared is fetched again from the committed offsets by the partitions' owner.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._records: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._paused: set[Any] = set()
        self.on_full: Any = None  # consumer.on_buffer_full(tp)
        self.on_drop: Any = None  # consumer.on_buffer_drop(tp)

    def __len__(self) -> int:
        return len(self._records)

    def put(self, message: Any) -> None:
        """One delivered record (the consumer's loop calls ``ready()`` after a fetch)."""
        self._records.append(message)
        if len(self._records) > self.limit and self.on_full is not None:
            tp = message.tp
            if tp not in self._paused:
                self._paused.add(tp)
                self.on_full(tp)

    def ready(self) -> None:
        if self._records:
            self._ready.set()

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self, max_: int, generation_id: int) -> list[Any]:
        """Up to ``max_`` records in delivery order; records fetched under an earlier
        consumer generation (before a rebalance) are dropped: the partitions' owner reads
        them again from the committed offsets."""
        out: list[Any] = []
        records = self._records
        while records and len(out) < max_:
            message = records.popleft()
            if message.generation_id == generation_id:
                out.append(message)
        if not records:
            self._ready.clear()
        self._resume_if_drained()
        return out

    def clear(self) -> None:
        """Drop what is buffered (Faust's flow control, at a rebalance)."""
        self._records.clear()
        self._ready.clear()
        self._resume_if_drained()

    def _resume_if_drained(self) -> None:
        if self._paused and len(self._records) <= self.limit // 2:
            paused, self._paused = self._paused, set()
            if self.on_drop is not None:
                for tp in paused:
                    self.on_drop(tp)


class Lane:
    """One lane's loop: takes batches from its ``LaneBuffer`` and hands them to ``body``.

    The records of a batch are tracked by the consumer when taken (so a rebalance waits for
    the batch, as it waits for an agent's events) and acked (released for commit) only
    after ``body`` returned; a batch whose body failed or was cancelled is held back: its
    offsets are never committed, and the partitions' next owner reads it again.
    """

    def __init__(
        self,
        app: faust.App,
        buffer: LaneBuffer,
        body: Any,
        *,
        max_: int,
        within: float,
    ) -> None:
        self.app = app
        self.buffer = buffer
        self.body = body
        self.max = max_
        self.within = within

    async def run(self) -> None:
        app = cast(Any, self.app)
        buffer = self.buffer
        while not app.should_stop:
            await buffer.wait()
            await app.flow_control.acquire()  # not while a rebalance is under way
            if self.within and len(buffer) < self.max:
                await asyncio.sleep(self.within)  # let a batch fill when records trickle in
            messages = buffer.take(self.max, app.consumer_generation_id)
            if messages:
                await self.run_batch(messages)

    async def run_batch(self, messages: list[Any]) -> None:
        consumer = cast(Any, self.app).consumer
        for message in messages:
            message.tracked = True
            consumer.track_message(message)
        finished = False
        try:
            await self.body(messages)
            finished = True
        except Exception:  # a lane outlives a failed batch, as an agent does
            log.exception("lane batch failed", lane=self.buffer.name, records=len(messages))
        finally:
            if finished:
                for message in messages:
                    consumer.ack(message)
            else:
                hold_back(messages)


def raw_records(messages: Sequence[Any]) -> list[RawRecord]:
    """Faust's consumer messages as the processor's raw records."""
    return [
        RawRecord(
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            key=m.key,
            value=m.value,
            headers=_headers(m.headers),
            timestamp=m.timestamp,
        )
        for m in messages
    ]


def hold_back(messages: Sequence[Any]) -> None:
    """Keep these records' offsets from ever being committed (their batch did not finish):
    marked acked without the consumer's bookkeeping, so a rebalance does not wait for them
    and the commit never passes them; the partitions' next owner reads them again."""
    for message in messages:
        message.acked = True


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def _raw_topic(app: faust.App, settings: Any, names: Sequence[str]) -> Any:
    return app.topic(
        *[settings.topic(t) for t in names],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


def register_lanes(app: faust.App, runtime: Any) -> UrgentFirst:
    """Subscribe to the input topics and define the urgent and the bulk lanes' tasks;
    returns their priority gate. ``app.lane_buffers`` maps each input topic's full name to
    its lane's buffer (the consumer delivers there)."""
    settings = runtime.settings
    gate = UrgentFirst(step_seconds=settings.bulk_step_seconds)
    limit = max(4096, settings.batch_size * 6)
    buffers: dict[str, LaneBuffer] = {}

    async def urgent(messages: list[Any]) -> None:
        gate.urgent_started()
        try:
            report = await runtime.processor.process(raw_records(messages))
            runtime.relay.publish_later(report.outbox_seqs, report.outbox_rows)
        finally:
            gate.urgent_done()

    async def bulk(messages: list[Any]) -> None:
        done = 0
        while done < len(messages):
            n = await gate.bulk_turn(len(messages) - done)
            started = time.monotonic()
            report = await runtime.processor.process(raw_records(messages[done : done + n]))
            gate.bulk_took(n, time.monotonic() - started)
            done += n
            runtime.relay.publish_later(report.outbox_seqs, report.outbox_rows)

    specs = (("garda.urgent", URGENT_TOPICS, urgent), ("garda.bulk", BULK_TOPICS, bulk))
    for name, names, body in specs:
        buffer = LaneBuffer(name, limit)
        cast(Any, app).flow_control.manage_queue(buffer)
        app.topics.add(_raw_topic(app, settings, names))  # the consumer subscribes to them
        for t in names:
            buffers[settings.topic(t)] = buffer
        lane = Lane(app, buffer, body, max_=settings.batch_size, within=settings.batch_within)
        app.task(lane.run, traced=False)
    # also the buffers' strong references: Faust's flow control holds them weakly
    cast(Any, app).lane_buffers = buffers
    return gate
