"""Records the Kafka client cannot decode, on the real broker, in front of a real worker:
each one becomes a dead letter with its topic, partition and offsets; the valid events
around them are processed; the worker stays alive, also after a restart."""

from __future__ import annotations

import json
from pathlib import Path

from infra.settings import Settings
from schemas import topics
from tests import rawbatch
from tests.integration.events import departure
from tests.integration.harness import (
    WorkerProcess,
    db_fetch,
    eventually,
    get_json,
    read_events,
)


def _event_batch(ev: dict, compression: int = 0) -> bytearray:
    return rawbatch.batch(
        [(ev["subject"].encode(), json.dumps(ev).encode(), [])], compression=compression
    )


def _bad_header_key(ev: dict) -> bytearray:
    raw = rawbatch.batch([(ev["subject"].encode(), json.dumps(ev).encode(), [("ZZQQ", b"x")])])
    return rawbatch.replace(raw, b"ZZQQ", b"\xff\xfeQQ")


async def _processed(settings: Settings) -> set[str]:
    rows = await db_fetch(settings.database_url, "SELECT worker_id FROM processed_events")
    return {r["worker_id"] for r in rows}


async def test_undecodable_batches_are_dead_letters_and_the_worker_goes_on(
    settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    topic = settings.topic(topics.DEPARTURES)
    sends = [
        ("ok", _event_batch(departure("W-U-OK-1", "TW"))),
        ("header-key", _bad_header_key(departure("W-U-BAD-1", "TW"))),
        ("zstd-garbage", rawbatch.with_codec(_event_batch(departure("W-U-BAD-2", "TW")), 4)),
        ("lz4-garbage", rawbatch.with_codec(_event_batch(departure("W-U-BAD-3", "TW")), 3)),
        ("crc", _event_batch(departure("W-U-BAD-4", "TW"))),
        ("gzip", _event_batch(departure("W-U-GZ", "TW"), compression=1)),
        ("snappy", _event_batch(departure("W-U-SNAPPY", "TW"), compression=2)),
        ("lz4", _event_batch(departure("W-U-LZ4", "TW"), compression=3)),
        ("zstd", _event_batch(departure("W-U-ZSTD", "TW"), compression=4)),
        ("ok", _event_batch(departure("W-U-OK-2", "TW"))),
    ]
    sends[4][1][-3] ^= 0xFF  # corrupt a byte the CRC covers
    for _, raw in sends:
        resp = await rawbatch.produce_raw(settings.kafka_bootstrap, topic, 0, raw)
        assert resp.topics[0][1][0][1] == 0, resp  # the broker took it
    good = {"W-U-OK-1", "W-U-GZ", "W-U-SNAPPY", "W-U-LZ4", "W-U-ZSTD", "W-U-OK-2"}
    await eventually(lambda: _processed(settings), lambda s: good <= s, timeout=30)
    rows = await db_fetch(
        settings.database_url, 'SELECT partition, "offset", error FROM deadletters ORDER BY 2'
    )
    assert [(r["partition"], r["offset"]) for r in rows] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    errors = [r["error"] for r in rows]
    assert all(
        e.startswith(f"undecodable record batch (offset {o}): ")
        for e, o in zip(errors, [1, 2, 3, 4], strict=True)
    )
    assert "UnicodeDecodeError" in errors[0]
    assert "DecompressionError" in errors[1] and "DecompressionError" in errors[2]
    assert "invalid CRC" in errors[3]
    dead = await read_events(settings, topics.DEADLETTER)
    assert sorted(int(dict(m.headers)["garda-source-offset"]) for m, _ in dead) == [1, 2, 3, 4]
    assert all(dict(m.headers)["garda-source-topic"] == topic.encode() for m, _ in dead)
    assert worker.proc is not None and worker.proc.poll() is None
    status, health = await get_json(f"{worker.url}/health")
    assert status == 200, health

    # A restart neither crashes on them nor dead-letters them twice.
    await worker.stop()
    again = WorkerProcess(settings, tmp_path, "w1-again")
    await again.start()
    try:
        await rawbatch.produce_raw(
            settings.kafka_bootstrap, topic, 0, _event_batch(departure("W-U-OK-3", "TW"))
        )
        await eventually(lambda: _processed(settings), lambda s: "W-U-OK-3" in s, timeout=30)
        count = await db_fetch(settings.database_url, "SELECT count(*) FROM deadletters")
        assert count[0][0] == 4
        assert again.proc is not None and again.proc.poll() is None
    finally:
        await again.stop()
