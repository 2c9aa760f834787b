"""A Faust transport whose consumer fetches with a short ``fetch_max_wait_ms`` and survives
records the client cannot decode.

Faust fixes the worker consumer's fetch wait at 1500 ms; on Tansu an empty fetch sleeps that
long and does not wake when data arrives, which spreads 0-750 ms of latency over every hop.
The value comes from ``GardaApp.fetch_max_wait_ms``.

Once the consumer has started, its fetcher is guarded (``streams.undecodable``): a batch
that cannot be decoded becomes one marker record the processor dead-letters.

The urgent lane's records are handed out first (``GardaApp.urgent_topics``): aiokafka hands
out what it fetched partition by partition in the order the fetches arrived, up to
``max_poll_records`` per call, so an incident fetched just after a megabyte of claims on
each bulk partition waited until Faust had delivered all of them (seconds under a backlog).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport

from streams.undecodable import guard_fetcher

BULK_HANDOUT = 100  # bulk records per fetch call while urgent work is about


class _ConsumerThread(AIOKafkaConsumerThread):
    logger = logging.getLogger("faust.transport")  # Faust's records keep Faust's logger name

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 25))
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        guard_fetcher(self._consumer)

    def _bulk_share(self, max_records: int | None, taken: int) -> int | None:
        """How many bulk records this call may hand out: few while urgent work is about
        (Faust delivers a call's records one by one before it fetches again, so an urgent
        record waits for the bulk ones handed out before it)."""
        lanes = getattr(self.app, "lanes", None)
        if max_records is None:
            return None
        left = max_records - taken
        if lanes is not None and lanes.urgent_about:
            return min(left, BULK_HANDOUT)
        return left

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[Any],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        urgent_topics: frozenset[str] = getattr(self.app, "urgent_topics", frozenset())
        urgent = {tp for tp in active_partitions or () if tp.topic in urgent_topics}
        if not urgent or not self.consumer.flow_active:
            return await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        first = await super()._fetch_records(consumer, urgent, 0, max_records)
        if not first:  # nothing urgent yet: wait for anything (the next call looks again)
            return await super()._fetch_records(
                consumer, active_partitions, timeout, self._bulk_share(max_records, 0)
            )
        lanes = getattr(self.app, "lanes", None)
        if lanes is not None:
            lanes.urgent_seen()  # the bulk lane takes small steps from now on
        taken = sum(len(records) for records in first.values())
        if max_records is not None and taken >= max_records:
            return first
        rest = await super()._fetch_records(
            consumer,
            set(active_partitions) - urgent,
            0,
            self._bulk_share(max_records, taken),
        )
        return {**first, **rest}


class _Consumer(Consumer):
    logger = logging.getLogger("faust.transport")

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - the loop
        """Faust's delivery loop (faust-streaming 0.15.3, ``Consumer._drain_messages``) with
        one change: a record of a topic that has a lane buffer (``app.lane_buffers``) is put
        in that buffer, and each buffer is woken once per fetch; other topics keep Faust's
        per-record delivery (``callback``). Faust hands a record to its agents one at a
        time, each through two new tasks (``wait_first``), the conductor, an event and the
        stream's queue: about 200 µs per record on this machine, as much as Garda's whole
        pipeline. Kept as Faust writes it otherwise (read offsets, gaps, commit_every), so
        commits and rebalances behave as before.
        """
        buffers: dict[str, Any] = getattr(self.app, "lane_buffers", None) or {}
        if not buffers:
            return await super()._drain_messages(fetcher)
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        get_buffer = buffers.get
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    woken: set[Any] = set()
                    async for tp, message in ait:
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            buffer = get_buffer(tp.topic)
                            if buffer is not None:
                                buffer.put(message)
                                woken.add(buffer)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    for buffer in woken:
                        buffer.ready()
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FastFetchTransport(Transport):
    Consumer = _Consumer
