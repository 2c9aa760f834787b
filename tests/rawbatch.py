"""Hand-built Kafka record batches, sent with a raw ProduceRequest (what a buggy or foreign
producer can put on a topic that aiokafka's own producer never would)."""

from __future__ import annotations

import struct
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

_CRC_AT = 17  # baseOffset(8) length(4) partitionLeaderEpoch(4) magic(1)
_ATTRIBUTES_AT = 21


def batch(
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    *,
    compression: int = 0,
) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=None, key=key, value=value, headers=headers)
    return bytearray(builder.build())


def fix_crc(buf: bytearray) -> bytearray:
    struct.pack_into(">I", buf, _CRC_AT, calc_crc32c(bytes(buf[_ATTRIBUTES_AT:])))
    return buf


def replace(buf: bytearray, old: bytes, new: bytes) -> bytearray:
    """Same-length byte replacement inside an uncompressed batch, CRC recomputed."""
    assert len(old) == len(new) and buf.count(old) == 1
    at = buf.index(old)
    buf[at : at + len(old)] = new
    return fix_crc(buf)


def with_codec(buf: bytearray, codec: int) -> bytearray:
    """Claim compression ``codec`` (0-7) in the attributes, CRC recomputed."""
    (attrs,) = struct.unpack_from(">h", buf, _ATTRIBUTES_AT)
    struct.pack_into(">h", buf, _ATTRIBUTES_AT, (attrs & ~0x07) | codec)
    return fix_crc(buf)


async def produce_raw(bootstrap: str, topic: str, partition: int, raw: bytes) -> Any:
    """Send one raw batch to the partition leader; returns the broker's response."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        client = producer.client
        await client.force_metadata_update()
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(
            transactional_id=None,
            required_acks=-1,
            timeout=10000,
            topics=[(topic, [(partition, bytes(raw))])],
        )
        return await client.send(leader, request)
    finally:
        await producer.stop()
