"""The fetcher guard: a batch the Kafka client cannot decode becomes one marker record at the
batch's last offset; the batches around it are handed out unchanged."""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from streams.undecodable import guard, undecodable_reason
from tests import rawbatch

TP = TopicPartition("pmi.departures.v1", 0)


def _at(buf: bytearray, base_offset: int) -> bytearray:
    struct.pack_into(">q", buf, 0, base_offset)  # the base offset is outside the CRC
    return buf


def _good(base: int, n: int = 2) -> bytearray:
    return _at(rawbatch.batch([(b"W", b'{"n": %d}' % i, []) for i in range(n)]), base)


def _records(*batches: bytes) -> list:
    pr = PartitionRecords(
        TP, MemoryRecords(b"".join(batches)), [], 0, None, None, True, READ_UNCOMMITTED
    )
    return list(guard(pr)), pr.next_fetch_offset


def _bad(kind: str, base: int) -> bytearray:
    good = rawbatch.batch([(b"W", b"{}", [("ZZQQ", b"v")]), (b"W", b"{}", [])])
    if kind == "header-key":
        bad = rawbatch.replace(good, b"ZZQQ", b"\xff\xfeQQ")
    elif kind == "unknown-codec":
        bad = rawbatch.with_codec(good, 6)
    elif kind == "zstd-garbage":
        bad = rawbatch.with_codec(good, 4)
    elif kind == "lz4-garbage":
        bad = rawbatch.with_codec(good, 3)
    elif kind == "snappy-garbage":
        bad = rawbatch.with_codec(good, 2)
    else:  # bad CRC
        bad = good
        bad[-3] ^= 0xFF
    return _at(bad, base)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("header-key", "UnicodeDecodeError"),
        ("unknown-codec", ""),
        ("zstd-garbage", "DecompressionError"),
        ("lz4-garbage", "DecompressionError"),
        ("snappy-garbage", ""),
        ("crc", "invalid CRC"),
    ],
)
def test_an_undecodable_batch_is_one_marker_between_good_batches(kind: str, needle: str) -> None:
    recs, next_offset = _records(_good(0), _bad(kind, 2), _good(4))
    assert [r.offset for r in recs] == [0, 1, 3, 4, 5]
    assert next_offset == 6
    marker = recs[2]
    found = undecodable_reason(marker.headers)
    assert found is not None, marker
    reason, first = found
    assert first == 2
    assert reason.startswith("undecodable record batch (offsets 2 to 3): ")
    assert needle in reason
    assert [r.value for r in recs if r is not marker] == [b'{"n": 0}', b'{"n": 1}'] * 2


def test_records_before_the_bad_one_in_its_batch_are_kept() -> None:
    good = rawbatch.batch([(b"W", b"ok", []), (b"W", b"{}", [("ZZQQ", b"v")]), (b"W", b"x", [])])
    bad = rawbatch.replace(good, b"ZZQQ", b"\xff\xfeQQ")
    recs, next_offset = _records(bad)
    assert recs[0].value == b"ok" and undecodable_reason(recs[0].headers) is None
    reason, first = undecodable_reason(recs[1].headers)
    assert first == 1 and "offsets 1 to 2" in reason
    assert recs[1].offset == 2 and next_offset == 3


def test_a_forged_marker_header_is_an_ordinary_header() -> None:
    forged = [("garda-undecodable", b"nothing to see"), ("garda-undecodable-first-offset", b"0")]
    assert undecodable_reason(forged) is None
    assert undecodable_reason([*forged, ("garda-undecodable-token", b"guess")]) is None


def test_real_compressed_batches_decode() -> None:
    batches = [
        _at(rawbatch.batch([(b"W", b'{"c": %d}' % c, [])], compression=c), c) for c in (1, 2, 3, 4)
    ]
    recs, _ = _records(*batches)
    assert [r.value for r in recs] == [b'{"c": 1}', b'{"c": 2}', b'{"c": 3}', b'{"c": 4}']
