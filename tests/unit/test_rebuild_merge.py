"""``streams.rebuild.merged_records``: the streaming merge of a process's topic-partitions
gives exactly the head-by-head merge by (timestamp, topic, partition, offset) of the whole
logs, whatever the fetch sizes, pauses and exhaustion order."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from aiokafka import TopicPartition

from streams.rebuild import merged_records


@dataclass
class _Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple = ()


class _FakeConsumer:
    """What ``merged_records`` uses of ``AIOKafkaConsumer``: fetches of random sizes from
    in-memory logs, pauses, positions and high-water marks."""

    def __init__(self, logs: dict[TopicPartition, list[_Msg]], rng: random.Random) -> None:
        self.logs = logs
        self.rng = rng
        self.pos = dict.fromkeys(logs, 0)
        self.paused: set[TopicPartition] = set()
        self.fetched: set[TopicPartition] = set()

    def assign(self, parts: list[TopicPartition]) -> None:
        assert set(parts) == set(self.logs)

    async def seek_to_beginning(self, *parts: TopicPartition) -> None:
        for tp in parts:
            self.pos[tp] = 0

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.logs[tp]) if tp in self.fetched else None

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        out = {}
        for tp, log in self.logs.items():
            if tp in self.paused or self.rng.random() < 0.3:
                continue
            self.fetched.add(tp)
            n = self.rng.randint(0, 7)
            got = log[self.pos[tp] : self.pos[tp] + n]
            self.pos[tp] += len(got)
            if got:
                out[tp] = got
        return out


def _logs(rng: random.Random) -> dict[TopicPartition, list[_Msg]]:
    logs = {}
    for topic in ("a", "b", "c"):
        for p in (0, 3):
            tp = TopicPartition(topic, p)
            ts = rng.randint(0, 50)
            msgs = []
            for off in range(rng.choice([0, 1, 5, 40])):
                ts += rng.choice([0, 0, 1, 3, -2])  # ties and an occasional step back
                msgs.append(_Msg(topic, p, off, b"k", b"v", ts))
            logs[tp] = msgs
    return logs


async def test_the_merge_is_the_head_by_head_merge_of_the_whole_logs() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        logs = _logs(rng)
        expected = [
            (m.topic, m.partition, m.offset)
            for m in heapq.merge(
                *logs.values(), key=lambda m: (m.timestamp, m.topic, m.partition, m.offset)
            )
        ]
        consumer = _FakeConsumer(logs, rng)
        got = [
            (r.topic, r.partition, r.offset)
            async for r in merged_records(consumer, list(logs), buffer_limit=4)  # type: ignore[arg-type]
        ]
        assert got == expected, seed
