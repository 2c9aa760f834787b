"""A Faust transport whose consumer fetches with a short ``fetch_max_wait_ms`` and survives
records the client cannot decode.

Faust fixes the worker consumer's fetch wait at 1500 ms; on Tansu an empty fetch sleeps that
long and does not wake when data arrives, which spreads 0-750 ms of latency over every hop.
The value comes from ``GardaApp.fetch_max_wait_ms``.

Once the consumer has started, its fetcher is guarded (``streams.undecodable``): a batch
that cannot be decoded becomes one marker record the processor dead-letters.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport

from streams.undecodable import guard_fetcher


class _ConsumerThread(AIOKafkaConsumerThread):
    logger = logging.getLogger("faust.transport")  # Faust's records keep Faust's logger name

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 100))
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        guard_fetcher(self._consumer)


class _Consumer(Consumer):
    logger = logging.getLogger("faust.transport")

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FastFetchTransport(Transport):
    Consumer = _Consumer
