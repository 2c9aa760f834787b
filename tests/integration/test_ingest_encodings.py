"""POST /api/events with bad encodings: always a 4xx, dead-lettered and audited, never a 500
or a false "database unavailable". Requests are written byte by byte on a socket, as a
careless or hostile client would send them (aiohttp's client refuses to)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from infra.settings import Settings
from tests.integration.events import departure
from tests.integration.harness import WorkerProcess, db_fetch, new_token


async def raw_post(url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict]:
    """One HTTP/1.1 POST /api/events with exactly these header bytes; (status, JSON body)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = [b"POST /api/events HTTP/1.1", f"Host: {parts.netloc}".encode()]
        head += [k + b": " + v for k, v in headers]
        head += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    status = int(raw.split(b" ", 2)[1])
    payload = raw.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, {"raw": payload.decode("utf-8", "replace")}


def _binary(ev: dict, **override: bytes) -> list[tuple[bytes, bytes]]:
    h = {
        b"ce-specversion": b"1.0",
        b"ce-id": ev["id"].encode(),
        b"ce-source": ev["source"].encode(),
        b"ce-type": ev["type"].encode(),
        b"ce-subject": ev["subject"].encode(),
        b"Content-Type": b"application/json",
    }
    h.update({k.encode(): v for k, v in override.items()})
    return list(h.items())


async def test_bad_encodings_are_4xx_dead_lettered_and_audited(
    settings: Settings, worker: WorkerProcess
) -> None:
    _, hq = await new_token(settings, hq=True)
    auth = (b"Authorization", f"Bearer {hq}".encode())
    ev = departure("W-ENC-1", "TW")
    surrogate_body = json.dumps({**ev, "id": "enc-\udfff"}).encode()  # "\udfff" escape
    cases = [
        (
            "lone surrogate in id",
            [auth, (b"Content-Type", b"application/cloudevents+json")],
            surrogate_body,
            400,
        ),
        (
            "non-UTF-8 ce-source",
            [auth, *_binary(ev, **{"ce-source": b"desk-\xff\xfe"})],
            json.dumps(ev["data"]).encode(),
            400,
        ),
        (
            "non-UTF-8 ce-id",
            [auth, *_binary(ev, **{"ce-id": b"\xc3\x28"})],
            json.dumps(ev["data"]).encode(),
            400,
        ),
    ]
    for label, headers, body, expected in cases:
        status, reply = await raw_post(worker.url, headers, body)
        assert status == expected, (label, status, reply)
        assert "error" in reply, label
    # a token whose bytes are not text: 401, not "database unavailable"
    for token in (b"Bearer garda_\xff\xfe", b"Bearer \xc3\x28\xa0"):
        status, reply = await raw_post(
            worker.url, [(b"Authorization", token)], json.dumps(ev).encode()
        )
        assert status == 401, (token, status, reply)
    # control characters in a header value are refused by the HTTP server itself (400)
    status, _ = await raw_post(
        worker.url, [(b"Authorization", b"Bearer garda_\x7f\x01")], json.dumps(ev).encode()
    )
    assert status == 400
    dead = await db_fetch(
        settings.database_url,
        "SELECT error FROM deadletters WHERE topic = 'http:/api/events' ORDER BY seq",
    )
    errors = [r["error"] for r in dead]
    assert len(errors) == 3, errors
    assert errors[0].startswith("id: holds a lone UTF-16 surrogate")
    assert errors[1].startswith("ce_source: header is not valid UTF-8")
    assert errors[2].startswith("ce_id: header is not valid UTF-8")
    # a header name that is not a token never reaches Garda: the HTTP server answers 400
    status, _ = await raw_post(worker.url, [auth, *_binary(ev), (b"ce-\xffx", b"1")], b"{}")
    assert status == 400
    audited = await db_fetch(
        settings.database_url,
        "SELECT status FROM audit_log WHERE path = '/api/events' ORDER BY 1",
    )
    assert sorted(r["status"] for r in audited) == [400] * 3 + [401] * 2
    assert worker.proc is not None and worker.proc.poll() is None
