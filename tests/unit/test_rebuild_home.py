"""The rebuild's home partition is Kafka's default partitioner's (aiokafka's
``DefaultPartitioner``, the Java client's) for every key and partition count."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.rebuild import home_partition


@given(st.text(max_size=40), st.integers(min_value=1, max_value=300))
def test_the_home_partition_is_the_default_partitioners(worker_id: str, partitions: int) -> None:
    every = list(range(partitions))
    try:
        key = worker_id.encode()
    except UnicodeEncodeError:
        return
    assert home_partition(worker_id, partitions) == DefaultPartitioner()(key, every, every)
