"""Interoperability with the CloudEvents SDK's Kafka binding, both ways and both modes.

Garda keeps its own envelope code (the SDK parses times more leniently than the contract
allows); these tests prove that what the SDK writes, Garda reads, and what Garda writes, the
SDK reads, with the same attributes and data.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from schemas.envelope import decode, encode, new_envelope
from tests.unit.test_schemas import FULL

TYPE = "pmi.incident.reported"
DATA = FULL[TYPE]
WID = DATA["worker_id"]
AT = datetime(2026, 11, 29, 2, 31, 29, tzinfo=UTC)


def _sdk_event() -> CloudEvent:
    return CloudEvent(
        {
            "id": "7f0c2a",
            "source": "kjri-hong-kong/case-desk",
            "type": TYPE,
            "specversion": "1.0",
            "subject": WID,
            "time": AT,
            "datacontenttype": "application/json",
        },
        DATA,
    )


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_garda_reads_what_the_sdk_writes(mode: str) -> None:
    to = ce_kafka.to_structured if mode == "structured" else ce_kafka.to_binary
    msg = to(_sdk_event(), JSONFormat(), key_mapper=lambda e: e.get_subject())
    key = msg.key.encode() if isinstance(msg.key, str) else msg.key
    env = decode(key, msg.value, list(msg.headers.items()), topic="pmi.incidents.v1")
    assert (env.id, env.source, env.type, env.subject) == (
        "7f0c2a",
        "kjri-hong-kong/case-desk",
        TYPE,
        WID,
    )
    assert env.time == AT
    assert env.data["incident_id"] == DATA["incident_id"]
    assert env.data["category"] == DATA["category"]


def test_the_sdk_reads_what_garda_writes() -> None:
    env = new_envelope(type=TYPE, subject=WID, data=DATA, id="garda-1", time=AT, source="garda")
    msg = ce_kafka.KafkaMessage(
        headers={"content-type": b"application/cloudevents+json"},
        key=WID.encode(),
        value=encode(env),
    )
    event = ce_kafka.from_structured(msg, JSONFormat())
    assert event.get_id() == "garda-1"
    assert event.get_type() == TYPE
    assert event.get_subject() == WID
    assert event.get_time() == AT
    assert event.get_data() == DATA
