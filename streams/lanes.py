"""The two processing lanes: urgent reports never wait behind a bulk feed.

Each lane is a Faust agent over its own input topics, with its own stream buffer, and hands
batches to the shared ``BatchProcessor`` (one PostgreSQL transaction per batch; the offsets
of a batch are released for commit only after its transactions committed):

- **urgent**: ``pmi.incidents.v1`` (an SOS report), ``pmi.case-actions.v1`` (responders'
  acknowledgements, which a deadline must not overtake) and ``garda.commands.v1`` (the
  timers' deadline commands);
- **bulk**: ``pmi.departures.v1`` and ``pmi.claims.v1`` (registration and insurer feeds that
  arrive in large backlogs).

Rules decided where the design is silent:
- The bulk lane yields to the urgent one (``UrgentFirst``): it starts a transaction only while
  no urgent batch is being processed, and while urgent work has been seen in the last
  ``URGENT_QUIET`` seconds it processes its batch in steps of ``BULK_STEP`` records, one
  transaction each, so that an urgent batch waits for at most one small step (for the event
  loop, and for the per-worker locks a bulk transaction holds). The batch's offsets are
  released only after its last step committed; a step that committed before a crash is
  read again and deduplicated (``processed_events``), like any replay.
- Urgent records are also first in the consumer (``streams.transport``): of what the
  fetcher holds, the urgent partitions' records are handed out first, and while urgent work
  is about at most ``BULK_HANDOUT`` bulk records per call; a partition's fetch is at most
  128 KB (``streams.app.FETCH_BYTES_PER_PARTITION``), so a fetch round full of claims does
  not delay the incidents that come with the next one.
- A batch takes every event already delivered to the lane (``take_batches``), not only
  what arrived in the last ``batch_within`` seconds: a lane behind catches up in a few big
  batches instead of falling further behind in many small ones.
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
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust

from schemas import topics
from streams.processor import RawRecord

URGENT_TOPICS = (topics.INCIDENTS, topics.CASE_ACTIONS, topics.COMMANDS)
BULK_TOPICS = (topics.DEPARTURES, topics.CLAIMS)
assert sorted(URGENT_TOPICS + BULK_TOPICS) == sorted(topics.INPUTS), "every input in one lane"

BULK_STEP = 50  # records per bulk transaction while urgent work is about
URGENT_QUIET = 2.0  # seconds without urgent work before the bulk lane takes whole batches


class UrgentFirst:
    """The priority between the lanes (one per process; both lanes run on one event loop)."""

    def __init__(self, *, step: int = BULK_STEP, quiet: float = URGENT_QUIET) -> None:
        self.step = step
        self.quiet = quiet
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

    async def bulk_turn(self, remaining: int) -> int:
        """Wait until no urgent batch is in progress; how many records the bulk lane may put
        in its next transaction (of ``remaining``)."""
        if not self._idle.is_set():
            self.bulk_waits += 1
            await self._idle.wait()
        return min(remaining, self.step) if self.urgent_about else remaining


async def take_batches(stream: faust.StreamT, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """Faust's ``Stream.take_events(max_, within)`` (faust-streaming 0.15), with one change:
    a batch is cut after ``within`` seconds only once every event already delivered to the
    stream's buffer has been taken (or at ``max_``, or when no event came in ``within``).

    ``take_events`` cuts a batch ``within`` seconds after the previous one ended, whatever is
    still waiting: Faust moves events from the buffer into the batch one at a time, a few
    per 10 ms on a loaded machine, so each batch held 3 incidents while hundreds waited and
    the lane fell behind the 200 incidents/s it had to take. The events are acked (released
    for commit) when the body asks for the next batch, as in ``take_events``.
    """
    st = cast(Any, stream)  # the Stream internals take_events itself uses
    buffer: list[Any] = []
    events: list[Any] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    consuming: asyncio.Future | None = None
    channel_it = aiter(st.channel)
    queue = getattr(channel_it, "queue", None)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            buffer.append(value)
            event = st.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            events.append(event)
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await st.wait(buffer_consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st.log.exception("Error adding to take buffer: %r", exc)
            await st.crash(exc)
        return value

    st.enable_acks = False  # acked below, only after the body took the batch
    st.add_processor(add_to_buffer)
    st._enable_passive(channel_it)
    while not st.should_stop:
        await st.wait_for_stopped(buffer_full, timeout=within)
        taken = -1
        while (
            taken < len(buffer)  # still moving (a stalled stream, e.g. in a rebalance, cuts)
            and not buffer_full.is_set()
            and not st.should_stop
            and queue is not None
            and queue.qsize() > 0
        ):
            taken = len(buffer)
            await st.wait_for_stopped(buffer_full, timeout=within)  # take what is waiting
        if buffer:
            fut = consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(events)
            finally:
                buffer.clear()
                for event in events:
                    await st.ack(event)
                events.clear()
                if not fut.done():
                    fut.set_result(None)
                buffer_full.clear()
                buffer_consumed.set()


def raw_records(events: Sequence[Any]) -> list[RawRecord]:
    """The Faust events of a batch as the processor's raw records."""
    return [
        RawRecord(
            topic=e.message.topic,
            partition=e.message.partition,
            offset=e.message.offset,
            key=e.message.key,
            value=e.message.value,
            headers=_headers(e.message.headers),
            timestamp=e.message.timestamp,
        )
        for e in events
    ]


def hold_back(events: Sequence[Any]) -> None:
    """Keep these events' offsets from ever being committed (their batch did not finish).

    Faust acks a ``take_events`` batch in a ``finally`` block, even when the body was
    cancelled; marking the messages acked first keeps their offsets out of the commit, so
    the next owner of the partition reads them again.
    """
    for event in events:
        event.message.acked = True


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
    """Define the urgent and the bulk agents on ``app``; returns their priority gate."""
    settings = runtime.settings
    gate = UrgentFirst()

    @app.agent(_raw_topic(app, settings, URGENT_TOPICS), name="garda.urgent")
    async def urgent(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.batch_size, settings.batch_within):
            finished = False
            gate.urgent_started()
            try:
                report = await runtime.processor.process(raw_records(events))
                finished = True
                runtime.relay.publish_later(report.outbox_seqs, report.outbox_rows)
            finally:
                gate.urgent_done()
                if not finished:
                    hold_back(events)

    @app.agent(_raw_topic(app, settings, BULK_TOPICS), name="garda.bulk")
    async def bulk(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, settings.batch_size, settings.batch_within):
            done = 0
            try:
                while done < len(events):
                    n = await gate.bulk_turn(len(events) - done)
                    report = await runtime.processor.process(raw_records(events[done : done + n]))
                    done += n
                    runtime.relay.publish_later(report.outbox_seqs, report.outbox_rows)
            finally:
                if done < len(events):
                    hold_back(events)

    return gate
