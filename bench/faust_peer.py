"""The peer baseline: a plain Faust agent that only decodes the events (what a team would
write first with the same stack), in its own process.

    python -m bench.faust_peer BOOTSTRAP TOPIC_PREFIX N

Values arrive as raw bytes and are ``json.loads``-ed one by one in the agent. The group
settings that Tansu needs are the ones Garda uses (session timeout 10 s,
heartbeat 1 s) and the same short fetch wait (``streams.transport``). Prints one JSON line:
seconds and events/s from the first event to the N-th (the group join is excluded).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import faust

from infra.processes import free_port
from schemas import topics
from streams.transport import FastFetchTransport


class _App(faust.App):
    fetch_max_wait_ms = 100

    def _new_transport(self) -> FastFetchTransport:
        return FastFetchTransport(self.conf.broker_consumer, self, loop=self.loop)


def main(argv: list[str]) -> int:
    bootstrap, prefix, n = argv[0], argv[1], int(argv[2])
    app = _App(
        f"{prefix}peer",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=10,
        web_enabled=False,
        web_port=free_port(),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        datadir=tempfile.mkdtemp(prefix="garda-peer-"),
    )
    inputs = app.topic(
        *[prefix + t for t in topics.INPUTS],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    state = {"count": 0, "t0": 0.0}

    @app.agent(inputs)
    async def decode(stream: faust.StreamT) -> None:
        async for value in stream:
            json.loads(value)
            if state["count"] == 0:
                state["t0"] = time.perf_counter()
            state["count"] += 1
            if state["count"] == n:
                elapsed = time.perf_counter() - state["t0"]
                print(
                    "RESULT "
                    + json.dumps(
                        {
                            "events": n,
                            "seconds": round(elapsed, 3),
                            "events_per_s": round(n / elapsed),
                        }
                    ),
                    flush=True,
                )
                os._exit(0)  # done: a benchmark child need not leave its group politely

    faust.Worker(
        app, loglevel="warning", override_logging=False, quiet=True
    ).execute_from_commandline()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
