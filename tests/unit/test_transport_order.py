"""The consumer hands out the urgent lane's fetched records first (``streams.transport``),
over a stand-in for aiokafka's fetcher that keeps its records per partition in arrival
order, as aiokafka's does."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition

from streams.lanes import UrgentFirst
from streams.transport import BULK_HANDOUT, _ConsumerThread

CLAIMS = [TopicPartition("pmi.claims.v1", p) for p in range(2)]
INCIDENTS = TopicPartition("pmi.incidents.v1", 0)


class Fetcher:
    """aiokafka's ``fetched_records``: partitions in arrival order, up to ``max_records``."""

    def __init__(self, records: dict[TopicPartition, list[int]]) -> None:
        self._records = records
        self._closed = False
        self._subscriptions = SimpleNamespace(fetch_context=contextlib.nullcontext)

    async def fetched_records(
        self, partitions: set[TopicPartition], timeout: float = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[int]]:
        out: dict[TopicPartition, list[int]] = {}
        left = max_records
        for tp in list(self._records):
            if tp not in partitions or not self._records[tp]:
                continue
            take = self._records[tp] if left is None else self._records[tp][:left]
            self._records[tp] = self._records[tp][len(take) :]
            out[tp] = take
            if left is not None:
                left -= len(take)
                if left == 0:
                    break
        return out


def thread(lanes: UrgentFirst) -> Any:
    t = _ConsumerThread.__new__(_ConsumerThread)
    t.consumer = SimpleNamespace(flow_active=True)
    t.app = SimpleNamespace(urgent_topics=frozenset({INCIDENTS.topic}), lanes=lanes)
    return t


def backlog() -> tuple[Any, Fetcher]:
    # A megabyte of claims per bulk partition arrived first, then one incident.
    fetcher = Fetcher({CLAIMS[0]: list(range(900)), CLAIMS[1]: list(range(900)), INCIDENTS: [7]})
    return SimpleNamespace(_fetcher=fetcher, _closed=False), fetcher


async def test_an_incident_fetched_after_claims_is_handed_out_first() -> None:
    lanes = UrgentFirst(quiet=60)
    consumer, _ = backlog()
    got = await thread(lanes)._fetch_records(consumer, {*CLAIMS, INCIDENTS}, 1.0, 1000)
    assert list(got)[0] == INCIDENTS and got[INCIDENTS] == [7]
    # urgent work is about now: few bulk records in the same call
    assert sum(len(v) for tp, v in got.items() if tp != INCIDENTS) == BULK_HANDOUT
    assert lanes.urgent_about


async def test_without_urgent_records_the_bulk_takes_whole_calls() -> None:
    consumer, fetcher = backlog()
    fetcher._records[INCIDENTS] = []
    got = await thread(UrgentFirst(quiet=60))._fetch_records(
        consumer, {*CLAIMS, INCIDENTS}, 1.0, 1000
    )
    assert sum(len(v) for v in got.values()) == 1000
