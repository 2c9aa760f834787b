from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from infra import outbox
from infra.outbox import partition_of


def test_partition_of_is_the_producers_default_partitioner() -> None:
    rng = random.Random(7)
    default = DefaultPartitioner()
    keys = [f"PMI-{i:06d}".encode() for i in range(3000)]
    keys += [rng.randbytes(rng.randrange(0, 40)) for _ in range(3000)]
    for n in (1, 3, 6, 12, 64):
        parts = list(range(n))
        for key in keys + keys:  # the second pass reads the cached hashes
            assert partition_of(key, parts) == default(key, parts, parts)
    assert partition_of(None, [0, 1, 2]) in (0, 1, 2)


def test_the_hash_cache_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(outbox, "_HASHES_MAX", 10)
    outbox._HASHES.clear()
    for i in range(25):
        partition_of(str(i).encode(), [0, 1, 2])
    assert 0 < len(outbox._HASHES) <= 10
