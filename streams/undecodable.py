"""Records the Kafka client cannot decode become dead letters, never a crashed fetcher.

aiokafka decodes a fetched batch lazily, while the consumer hands records out; a batch it
cannot decode (a compressed payload that does not decompress, a codec it lacks, a failing
CRC, a header key that is not UTF-8) raises out of ``getmany`` at every attempt, which kills
Faust's consumer and, after a restart, every worker that owns the partition.

``guard_fetcher(consumer)`` makes one consumer's fetcher iterate each batch inside a guard:
the records of a batch that decode are handed out as usual; from the first one that does not,
the rest of the batch is replaced by one marker record at the batch's last offset (so the
committed position moves past it and nothing is fetched again), whose headers say why and
which offsets it covers. ``undecodable_reason(headers)`` recognises the marker: the
processor dead-letters it with the topic, partition and offset range. A producer cannot forge
one: the marker carries a token made at process start.

Rules decided where the design is silent:
- The marker's value is empty: aiokafka does not keep the batch's bytes, and the record is
  still on the input topic (infinite retention) at the offsets the dead letter names.
- When even the batch boundary cannot be read, the guard skips one offset at a time, each one
  a dead letter; progress is certain.
- Only this consumer is changed (its fetcher's class is switched to a subclass right after
  ``start``), never aiokafka globally; the guard needs aiokafka's ``PartitionRecords`` layout
  (0.12 to 0.14) and logs a warning, leaving the consumer as it was, when it is not there.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiokafka.consumer.fetcher import READ_COMMITTED, Fetcher, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.structs import ConsumerRecord

from infra.logging import get_logger

log = get_logger("garda.undecodable")

MARKER = "garda-undecodable"
MARKER_FIRST = "garda-undecodable-first-offset"
MARKER_TOKEN = "garda-undecodable-token"
_TOKEN = secrets.token_hex(16).encode()


def undecodable_reason(headers: Sequence[tuple[str, bytes]]) -> tuple[str, int] | None:
    """(reason, first offset) when these are the headers of a marker record of this process."""
    found = {k: v for k, v in headers if k in (MARKER, MARKER_FIRST, MARKER_TOKEN)}
    if found.get(MARKER_TOKEN) != _TOKEN or MARKER not in found:
        return None
    return found[MARKER].decode(), int(found.get(MARKER_FIRST, b"-1"))


def _marker(tp: Any, first: int, last: int, exc: BaseException) -> ConsumerRecord:
    span = f"offset {first}" if first == last else f"offsets {first} to {last}"
    reason = (
        f"undecodable record batch ({span}): {type(exc).__name__}: {exc}"
        if str(exc)
        else f"undecodable record batch ({span}): {type(exc).__name__}"
    )
    headers = (
        (MARKER, reason.encode("utf-8", "backslashreplace")[:2000]),
        (MARKER_FIRST, str(first).encode()),
        (MARKER_TOKEN, _TOKEN),
    )
    return ConsumerRecord(
        tp.topic, tp.partition, last, int(time.time() * 1000), 0, None, b"", None, -1, 0, headers
    )


def guarded_records(pr: PartitionRecords) -> Iterator[ConsumerRecord]:
    """aiokafka's ``PartitionRecords._unpack_records`` with each batch decoded in a guard."""
    tp, records = pr._tp, pr._records
    while records.has_next():
        first = pr.next_fetch_offset
        try:
            next_batch = records.next_batch()
        except Exception as exc:  # noqa: BLE001 - the boundary itself is unreadable
            log.error("undecodable batch boundary", topic=tp.topic, partition=tp.partition)
            pr.next_fetch_offset = first + 1
            yield _marker(tp, first, first, exc)
            return
        decoded: list[ConsumerRecord] = []
        try:
            if pr._check_crcs and not next_batch.validate_crc():
                raise CorruptRecordException("invalid CRC")
            if pr._isolation_level == READ_COMMITTED and next_batch.producer_id is not None:
                pr._consume_aborted_up_to(next_batch.base_offset)
                if next_batch.is_control_batch and pr._contains_abort_marker(next_batch):
                    pr._aborted_producers.discard(next_batch.producer_id)
                if next_batch.is_transactional and next_batch.producer_id in pr._aborted_producers:
                    pr.next_fetch_offset = next_batch.next_offset
                    continue
            if next_batch.is_control_batch:
                pr.next_fetch_offset = next_batch.next_offset
                continue
            for record in next_batch:
                if record.offset < pr.next_fetch_offset:
                    continue
                decoded.append(pr._consumer_record(tp, record))
                first = record.offset + 1
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the batch is poison
            last = next_batch.next_offset - 1
            first = max(first, pr.next_fetch_offset, next_batch.base_offset)
            for rec in decoded:
                pr.next_fetch_offset = rec.offset + 1
                yield rec
            log.error(
                "undecodable record batch",
                topic=tp.topic,
                partition=tp.partition,
                first_offset=first,
                last_offset=last,
                error=f"{type(exc).__name__}: {exc}",
            )
            if last >= first:
                pr.next_fetch_offset = last + 1
                yield _marker(tp, first, last, exc)
            else:
                pr.next_fetch_offset = next_batch.next_offset
            continue
        for rec in decoded:
            pr.next_fetch_offset = rec.offset + 1
            yield rec
        pr.next_fetch_offset = next_batch.next_offset


def guard(pr: PartitionRecords) -> PartitionRecords:
    """Make ``pr`` (not yet iterated) hand out its records through ``guarded_records``."""
    if not getattr(pr, "_garda_guarded", False):
        pr._records_iterator = guarded_records(pr)
        pr._garda_guarded = True
    return pr


class GuardedFetcher(Fetcher):
    """aiokafka's fetcher whose fetched batches are decoded through ``guarded_records``."""

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        needs_wakeup = await super()._proc_fetch_request(assignment, node_id, request)
        for result in list(self._records.values()):
            if type(result) is FetchResult and isinstance(
                result._partition_records, PartitionRecords
            ):
                guard(result._partition_records)
        return needs_wakeup


def guard_fetcher(consumer: Any) -> bool:
    """Switch a started ``AIOKafkaConsumer``'s fetcher to ``GuardedFetcher``; True if done."""
    fetcher = getattr(consumer, "_fetcher", None)
    if isinstance(fetcher, GuardedFetcher):
        return True
    layout = all(
        hasattr(PartitionRecords, a)
        for a in ("_unpack_records", "_consumer_record", "_consume_aborted_up_to")
    )
    if type(fetcher) is not Fetcher or not layout:
        log.warning("cannot guard the consumer's fetcher; undecodable records will crash it")
        return False
    fetcher.__class__ = GuardedFetcher
    return True
