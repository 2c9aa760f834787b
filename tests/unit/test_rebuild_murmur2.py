"""The rebuild's murmur2 and home partition are Kafka's (aiokafka's pure-Python murmur2 and
``DefaultPartitioner``, the Java client's) for every key and partition count."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from streams.rebuild import home_partition, murmur2


@given(st.binary(max_size=80))
def test_murmur2_is_kafkas(data: bytes) -> None:
    assert murmur2(data) == reference(data)


@given(st.text(max_size=40), st.integers(min_value=1, max_value=300))
def test_the_home_partition_is_the_default_partitioners(worker_id: str, partitions: int) -> None:
    every = list(range(partitions))
    try:
        key = worker_id.encode()
    except UnicodeEncodeError:
        return
    assert home_partition(worker_id, partitions) == DefaultPartitioner()(key, every, every)


def test_known_values() -> None:
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2)
    assert murmur2(b"21") & 0xFFFFFFFF == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"") & 0xFFFFFFFF == 275646681
