from __future__ import annotations

from streams.processor import RawRecord, in_time_order


def rec(topic: str, partition: int, offset: int, ts: float) -> RawRecord:
    return RawRecord(topic, partition, offset, b"k", b"v", [], ts)


def test_topics_are_merged_by_timestamp_keeping_each_partitions_order() -> None:
    batch = [
        rec("incidents", 0, 10, 5.0),
        rec("incidents", 0, 11, 1.0),  # out of time order within its partition: stays after 10
        rec("departures", 0, 3, 2.0),
        rec("departures", 0, 4, 6.0),
    ]
    out = [(r.topic, r.offset) for r in in_time_order(batch)]
    assert out == [("departures", 3), ("incidents", 10), ("incidents", 11), ("departures", 4)]


def test_a_single_partition_batch_is_untouched() -> None:
    batch = [rec("departures", 1, i, 10.0 - i) for i in range(5)]
    assert in_time_order(batch) == batch
