"""The outbox relay: output events reach Kafka from the ``outbox`` table, at least once.

The processor hands the seqs of a committed batch to ``publish_later(seqs)`` and goes on with
its next batch while a background task publishes them (``publish``, with retries): the batch
is durable in the ``outbox`` table, so the input offsets may be committed before the publish
ends. ``sweep()`` runs on a timer and publishes what a crashed or stopped processor left
behind.
Consumers dedupe on the CloudEvent ``id`` (stable across re-publication).

Rules decided where the design is silent:
- Rows are sent in producer batches (one per topic-partition at a time, in seq order: one
  acknowledgement per batch, not per row); the rows of an acknowledged batch are marked
  published, the others stay for the next attempt. A batch refused for good is sent again
  row by row, so one bad row never holds back the rows around it.
- A row the broker or the producer refuses for good (``PERMANENT_SEND_ERRORS``: too large,
  invalid topic, a value the client cannot send) is parked: ``parked_at`` and
  ``park_reason`` are set, it is counted (``parked``; ``garda_outbox_parked`` and
  ``garda_db_outbox_parked`` in ``/metrics``), logged, and never retried. ``store.write_batch`` checks every row's size, so
  this is a safety net, not the normal path.
- The background publisher takes what is queued at once (batches committed while it was busy
  go out together, in seq order: ``publish`` sends every unpublished row up to the newest
  seq). At stop it publishes what is queued before the producer closes (at most
  ``STOP_FLUSH_SECONDS``; what is left, the sweep of any worker publishes).
- Order per key survives a transient failure: when a row fails transiently, the later rows
  with the same topic and key in that attempt are not marked published either, so a retry
  sends them again after it (the compacted worker-state topic keeps the newest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import stamina
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import DefaultPartitioner, murmur2
from mode import Service

from infra.db import Database
from infra.logging import get_logger
from infra.metrics import OUTBOX_PARKED, OUTBOX_PUBLISHED
from infra.store import OutboxRow, decode_headers, record_size

log = get_logger("garda.outbox")

# The producer's limit (aiokafka's default); store.MAX_RECORD_BYTES stays below it.
MAX_REQUEST_SIZE = 1 << 20
PERMANENT_SEND_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.CorruptRecordException,
    TypeError,
    ValueError,
)


STOP_FLUSH_SECONDS = 10.0
KNOWN_ROWS_MAX = 50_000  # rows held for the background publisher (beyond: read back)
_PARTITIONER = DefaultPartitioner()  # the producer's own: murmur2 of the key, as Java's
_HASHES: dict[bytes, int] = {}  # key -> murmur2(key) & 0x7FFFFFFF (pure Python: ~1.5 % of a worker)
_HASHES_MAX = 100_000


def partition_of(key: bytes | None, parts: list[int]) -> int:
    """``DefaultPartitioner()(key, parts, parts)``: the same partition, with the murmur2 hash
    of a key computed once (kept for the last ``_HASHES_MAX`` distinct keys)."""
    if key is None:
        return int(_PARTITIONER(key, parts, parts))
    h = _HASHES.get(key)
    if h is None:
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        h = _HASHES[key] = murmur2(key) & 0x7FFFFFFF
    return parts[h % len(parts)]


class OutboxRelay(Service):
    """The Kafka producer of the outbox, a ``mode`` service: ``await relay.start()`` /
    ``stop()``, or ``async with relay``, or a dependency of another service (the runtime)."""

    def __init__(self, db: Database, bootstrap: str, *, sweep_age: float = 5.0) -> None:
        super().__init__()
        self.db = db
        self.bootstrap = bootstrap
        self.sweep_age = sweep_age
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.published = 0
        self.parked = 0
        self._queued: list[int] = []  # committed seqs the background publisher has not taken
        self._known: dict[int, OutboxRow] = {}  # of those, the rows held in memory
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            max_request_size=MAX_REQUEST_SIZE,
            enable_idempotence=False,  # Tansu has no idempotent producer (it fails)
        )
        await self._producer.start()
        self._publisher = asyncio.ensure_future(self._publish_queued())

    async def on_stop(self) -> None:
        if self._publisher is not None:
            publisher, self._publisher = self._publisher, None
            self._wake.set()  # it flushes what is queued, then returns (should_stop is set)
            try:
                await asyncio.wait_for(publisher, STOP_FLUSH_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("outbox publish at stop cut short; the sweep publishes the rest")
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def _send_one(self, row: Any) -> None:
        assert self._producer is not None, "OutboxRelay is not started"
        fut = await self._producer.send(
            row["topic"],
            value=bytes(row["value"]),
            key=bytes(row["key"]) if row["key"] is not None else None,
            headers=_headers(row),
        )
        await fut

    async def _send_batched(self, rows: Sequence) -> list[BaseException | None]:
        """Send ``rows`` in producer batches, one per topic-partition at a time, in order
        (the producer's own key partitioning); one result per row: None when its batch was
        acknowledged, else the batch's exception. A batch refused for good is sent again
        row by row, so that only the rows the broker refuses get its verdict."""
        assert self._producer is not None, "OutboxRelay is not started"
        producer = self._producer
        partitions: dict[str, list[int]] = {}
        for topic in {r["topic"] for r in rows}:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        sent: list[tuple[Any, list[int]]] = []  # (ack future, the row indexes of its batch)

        async def flush(tp: tuple[str, int]) -> None:
            batch, members = open_batches.pop(tp)
            try:
                ack = await producer.send_batch(batch, tp[0], partition=tp[1])
            except Exception as exc:  # noqa: BLE001 - the batch's rows get this verdict
                ack = asyncio.get_running_loop().create_future()
                ack.set_exception(exc)
            sent.append((ack, members))

        for i, row in enumerate(rows):
            try:
                key = bytes(row["key"]) if row["key"] is not None else None
                value = bytes(row["value"])
                headers = _headers(row)
                if record_size(key, value, headers) > MAX_REQUEST_SIZE:
                    raise ValueError("larger than the producer sends")  # send() refuses it
                parts = partitions[row["topic"]]
                tp = (row["topic"], partition_of(key, parts))
                for _ in range(2):  # the current batch of tp, or a new one when it is full
                    if tp not in open_batches:
                        open_batches[tp] = (producer.create_batch(), [])
                    batch, members = open_batches[tp]
                    if batch.append(key=key, value=value, timestamp=None, headers=headers):
                        members.append(i)
                        break
                    if not members:  # even alone it does not fit
                        open_batches.pop(tp)
                        raise ValueError("larger than a producer batch")
                    await flush(tp)
            except Exception:  # noqa: BLE001 - this row alone, through send(): its own verdict
                sent.append((asyncio.ensure_future(self._send_one(row)), [i]))
        for tp in list(open_batches):
            await flush(tp)
        acks = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        results: list[BaseException | None] = [None] * len(rows)
        for (_, members), ack in zip(sent, acks, strict=True):
            if not isinstance(ack, BaseException):
                continue
            if isinstance(ack, PERMANENT_SEND_ERRORS) and len(members) > 1:
                again = await asyncio.gather(
                    *(self._send_one(rows[i]) for i in members), return_exceptions=True
                )
                for i, one in zip(members, again, strict=True):
                    results[i] = one if isinstance(one, BaseException) else None
            else:
                for i in members:
                    results[i] = ack
        return results

    async def _send(self, conn: Any, rows: Sequence) -> list[int]:
        """Send ``rows`` (``_send_batched``); park the permanently refused ones (in
        ``conn``'s transaction); return the seqs that may be marked published."""
        results = await self._send_batched(rows)
        done: list[int] = []
        parked: list[tuple[int, str]] = []
        held: set[tuple[str, bytes | None]] = set()  # (topic, key) with a transient failure
        for row, result in zip(rows, results, strict=True):
            ident = (row["topic"], bytes(row["key"]) if row["key"] is not None else None)
            if isinstance(result, PERMANENT_SEND_ERRORS):
                parked.append((row["seq"], f"{type(result).__name__}: {result}"[:2000]))
            elif isinstance(result, BaseException):
                held.add(ident)
                log.warning(
                    "outbox row not published, will retry",
                    seq=row["seq"],
                    topic=row["topic"],
                    error=repr(result),
                )
            elif ident not in held:
                done.append(row["seq"])
        if parked:
            await conn.executemany(
                "UPDATE outbox SET parked_at = now(), park_reason = $2 WHERE seq = $1", parked
            )
            self.parked += len(parked)
            OUTBOX_PARKED.inc(len(parked))
            for seq, reason in parked:
                log.error("outbox row parked: the broker refuses it", seq=seq, reason=reason)
        return done

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send one record and wait for the broker's acknowledgement (HTTP ingest, timers)."""
        assert self._producer is not None, "OutboxRelay is not started"
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def send_raw_many(
        self, records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> list[tuple[int, int] | BaseException]:
        """Send ``(topic, key, value, headers)`` records together (one producer batch, not
        one round trip each) and wait for every acknowledgement; one result per record, in
        order: its ``(partition, offset)`` when it was acknowledged, else the exception (the
        caller retries it)."""
        assert self._producer is not None, "OutboxRelay is not started"
        producer = self._producer

        async def one(topic: str, key: bytes | None, value: bytes, headers: Any) -> Any:
            fut = await producer.send(topic, value=value, key=key, headers=headers)
            meta = await fut
            return (meta.partition, meta.offset)

        results = await asyncio.gather(*(one(*r) for r in records), return_exceptions=True)
        return [r if isinstance(r, BaseException) else (int(r[0]), int(r[1])) for r in results]

    def publish_later(self, seqs: Sequence[int], rows: Sequence[OutboxRow] = ()) -> None:
        """Queue these committed outbox rows for the background publisher; returns at once.

        ``rows``: those of them the caller holds (inserted, ``seq`` set); they are sent from
        memory, not read back (up to ``KNOWN_ROWS_MAX`` held at once)."""
        if seqs:
            self._queued.extend(seqs)
            if len(self._known) < KNOWN_ROWS_MAX:
                self._known.update((r.seq, r) for r in rows if r.seq is not None)
            self._wake.set()

    async def _publish_queued(self) -> None:
        """The background publisher: ``publish_with_retry`` what is queued, until stopped."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            seqs, self._queued = self._queued, []
            known, self._known = self._known, {}
            if seqs:
                await self.publish_with_retry(seqs, known=known)
            if self.should_stop and not self._queued:
                return

    async def publish(
        self, seqs: Sequence[int], known: Mapping[int, OutboxRow] | None = None
    ) -> int:
        """Publish these outbox rows and mark them published.

        Rows an earlier attempt left unpublished (seq below these) go first, in seq order, so
        that a worker's later state never reaches a topic before its earlier state (the
        compacted pmi.worker-state.v1 keeps the last one). ``known``: rows held in memory by
        seq (sent as they are; the others are read from the table).
        """
        if not seqs:
            return 0
        known = known or {}
        async with self._lock:
            async with self.db.pool.acquire() as conn, conn.transaction():
                # Row locks (waited for, in seq order) keep another worker's sweep from
                # re-sending an older row after these: the last value on a topic stays the
                # newest.
                pending = await conn.fetch(
                    "SELECT seq FROM outbox"
                    " WHERE published_at IS NULL AND parked_at IS NULL AND seq <= $1"
                    " ORDER BY seq LIMIT $2 FOR UPDATE",
                    max(seqs),
                    len(seqs) + 5000,
                )
                order = [r["seq"] for r in pending]
                missing = [s for s in order if s not in known]
                stored = {}
                if missing:
                    stored = {
                        r["seq"]: r
                        for r in await conn.fetch(
                            "SELECT seq, topic, key, value, headers FROM outbox"
                            " WHERE seq = ANY($1::bigint[])",
                            missing,
                        )
                    }
                rows = [stored[s] if s in stored else _as_record(s, known[s]) for s in order]
                done = await self._send(conn, rows)
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE seq = ANY($1)", done
                )
        self.published += len(done)
        OUTBOX_PUBLISHED.inc(len(done))
        return len(done)

    async def sweep(self, limit: int = 2000) -> int:
        """Publish rows left unpublished for longer than ``sweep_age`` seconds."""
        async with self._lock, self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT seq, topic, key, value, headers FROM outbox"
                " WHERE published_at IS NULL AND parked_at IS NULL"
                "   AND created_at < now() - make_interval(secs => $1)"
                " ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                self.sweep_age,
                limit,
            )
            if not rows:
                return 0
            done = await self._send(conn, rows)
            await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)", done)
        self.published += len(done)
        OUTBOX_PUBLISHED.inc(len(done))
        log.info("outbox swept", published=len(done))
        return len(done)

    async def publish_with_retry(
        self,
        seqs: Sequence[int],
        attempts: int = 5,
        known: Mapping[int, OutboxRow] | None = None,
    ) -> None:
        """Publish now if possible; on failure leave the rows to ``sweep`` (never lost).

        Up to ``attempts`` tries, with stamina's exponential backoff (0.1 s doubling, up to
        0.05 s of jitter, at most 2 s); each failure logs its own line. Any exception (not a
        cancellation) is retried: whatever is left, the sweep publishes later.
        """

        try:
            async for attempt in stamina.retry_context(
                on=Exception,
                attempts=attempts,
                timeout=None,
                wait_initial=0.1,
                wait_jitter=0.05,
                wait_max=2.0,
            ):
                with attempt:
                    try:
                        await self.publish(seqs, known)
                    except Exception as exc:
                        log.warning(
                            "outbox publish failed",
                            error=str(exc),
                            attempt=attempt.num,
                            retry_in=round(attempt.next_wait, 3),
                        )
                        raise
        except Exception:  # noqa: BLE001 - anything: the sweep will retry
            log.warning("outbox publish deferred to sweep", rows=len(seqs))


def _as_record(seq: int, row: OutboxRow) -> dict[str, Any]:
    """An in-memory outbox row in the shape of the table's (what ``_send`` reads); its
    headers as they are (``decoded_headers``): the stored JSON form is never read here."""
    return {
        "seq": seq,
        "topic": row.topic,
        "key": row.key,
        "value": row.value,
        "headers": None,
        "decoded_headers": row.headers,
    }


def _headers(row: Any) -> list[tuple[str, bytes]]:
    """A row's headers as the producer takes them (an in-memory row has them as they are)."""
    decoded = row.get("decoded_headers")
    return decoded if decoded is not None else decode_headers(row["headers"])
