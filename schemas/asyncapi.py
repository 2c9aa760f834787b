"""The AsyncAPI 3 document of Garda's topics, generated from ``schemas/``.

``python -m schemas.asyncapi`` rewrites ``docs/asyncapi.json``; ``--check`` exits 1 when the
committed file is not what the code generates (``bin/test`` runs the check as a test).

Rules decided here:

- The document describes the contract topics (design §2) from Garda's side: Garda
  *receives* on the input topics and *sends* on the output topics. The internal commands
  topic is left out (it is no contract).
- Each message is the structured-mode CloudEvent (content type
  ``application/cloudevents+json``); its ``data`` is the published JSON Schema of the type
  (``schemas/json/``), without ``$schema``/``$id`` (the AsyncAPI Schema Object is a
  superset of draft-07, and the schemas use no keyword draft-07 lacks).
- The Kafka key is the worker id (a message binding says so).
- Output types without a published data schema (``garda.case.*``, ``garda.worker.state``,
  the dead letters) have an object ``data`` described in words, with the JSON keys of
  design §6.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas import topics
from schemas.types import json_schema, list_types

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"
CONTENT_TYPE = "application/cloudevents+json"
KAFKA_BINDING_VERSION = "0.5.0"

CONTRACT_INPUTS = (topics.DEPARTURES, topics.INCIDENTS, topics.CLAIMS, topics.CASE_ACTIONS)
CASE_TYPES = topics.CASE_EVENT_TYPES
ALERT_TYPES = ("garda.alert.source-silent", "garda.alert.source-recovered")
CASE_KEYS = (
    "case_id, worker_id, kind, category, severity, status, post_id, escalation_level, "
    "ack_due, resolve_due, opened_at, reports"
)
WORKER_KEYS = (
    "worker_id, state, in_crisis, non_procedural, non_procedural_reasons, insured_until, "
    "open_cases, country, region"
)
_DESCRIBED = {
    topics.DEPARTURES: "A worker's journey: departure, failed departure, arrival, contract "
    "extension, return.",
    topics.INCIDENTS: "Incidents reported by missions, hotlines, the panic button, families.",
    topics.CLAIMS: "BPJS Ketenagakerjaan claims and their status changes.",
    topics.CASE_ACTIONS: "What responders do with a case (the API publishes these too).",
    topics.CASES: "The life of every case.",
    topics.WORKER_STATE: "The latest state of each worker (compacted: one record per key).",
    topics.ALERTS: "What the alerting hooks deliver.",
    topics.DEADLETTER: "Every refused input with the reason (headers garda-error, "
    "garda-source-topic, garda-source-partition, garda-source-offset).",
    topics.EMPLOYERS: "Employer watchlist changes (garda.employer.watchlisted, "
    "garda.employer.delisted), keyed by the employer key.",
}


def _channel_id(topic: str) -> str:
    return topic.removesuffix(".v1").replace("pmi.", "").replace(".", "-")


def _message_id(type_: str) -> str:
    return type_.replace(".", "_").replace("-", "_")


def _envelope(type_: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """The structured-mode CloudEvent carrying ``data`` (``type_`` None: any type)."""
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "data"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {
                "type": "string",
                "description": "Unique per source: (source, id) identifies the event.",
            },
            "source": {
                "type": "string",
                "description": "The producer, e.g. kjri-hong-kong/case-desk.",
            },
            "type": {"type": "string", **({"enum": [type_]} if type_ else {})},
            "subject": {
                "type": "string",
                "description": "The worker id: equals data.worker_id and the Kafka key.",
            },
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "enum": ["application/json"]},
            "data": data,
        },
    }


def _data_schema(type_: str) -> dict[str, Any]:
    schema = json_schema(type_)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


def _messages() -> dict[str, dict[str, Any]]:
    kafka_key = {
        "kafka": {
            "key": {"type": "string", "description": "The worker id (UTF-8)."},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }
    out: dict[str, dict[str, Any]] = {}
    described = {*(t for topic in CONTRACT_INPUTS for t in topics.TYPES_BY_TOPIC[topic])}
    described.update(ALERT_TYPES)
    for type_ in list_types():
        if type_ not in described:
            continue
        out[_message_id(type_)] = {
            "name": type_,
            "title": type_,
            "summary": _data_schema(type_)["description"],
            "contentType": CONTENT_TYPE,
            "payload": _envelope(type_, {"$ref": f"#/components/schemas/{type_}"}),
            "bindings": kafka_key,
        }
    for type_ in CASE_TYPES:
        out[_message_id(type_)] = {
            "name": type_,
            "title": type_,
            "summary": f"A case event ({type_.rsplit('.', 1)[1]}).",
            "contentType": CONTENT_TYPE,
            "payload": _envelope(
                type_, {"type": "object", "description": f"The case: {CASE_KEYS} (design §6)."}
            ),
            "bindings": kafka_key,
        }
    out["garda_worker_state"] = {
        "name": "garda.worker.state",
        "title": "garda.worker.state",
        "summary": "A worker's latest state.",
        "contentType": CONTENT_TYPE,
        "payload": _envelope(
            "garda.worker.state",
            {"type": "object", "description": f"The worker: {WORKER_KEYS} (design §6)."},
        ),
        "bindings": kafka_key,
    }
    out["garda_alert"] = {
        "name": "garda.alert",
        "title": "garda.alert.*",
        "summary": "Any other alert (garda.alert.<kind>), e.g. a case that needs attention.",
        "contentType": CONTENT_TYPE,
        "payload": _envelope(None, {"type": "object"}),
        "bindings": kafka_key,
    }
    out["garda_employer"] = {
        "name": "garda.employer",
        "title": "garda.employer.*",
        "summary": "An employer joined (watchlisted) or left (delisted) the watchlist.",
        "contentType": CONTENT_TYPE,
        "payload": _envelope(
            None,
            {
                "type": "object",
                "description": "employer_key, name, country, region, watchlisted, cases, "
                "threshold, window_days, categories",
            },
        ),
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The employer key (EMP-...)."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    out["deadletter"] = {
        "name": "deadletter",
        "title": "A refused input",
        "summary": "The refused record's bytes; personal identifiers masked, the full record "
        "kept in the database (header garda-deadletter-id).",
        "payload": {"description": "The input record's value as it was (any bytes)."},
    }
    return out


def _channel_messages(topic: str) -> list[str]:
    if topic in CONTRACT_INPUTS:
        return [_message_id(t) for t in topics.TYPES_BY_TOPIC[topic]]
    if topic == topics.CASES:
        return [_message_id(t) for t in CASE_TYPES]
    if topic == topics.WORKER_STATE:
        return ["garda_worker_state"]
    if topic == topics.ALERTS:
        return [*(_message_id(t) for t in ALERT_TYPES), "garda_alert"]
    if topic == topics.EMPLOYERS:
        return ["garda_employer"]
    return ["deadletter"]


def document() -> dict[str, Any]:
    """The AsyncAPI 3 document, as a JSON-ready dict."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in (*CONTRACT_INPUTS, *topics.OUTPUTS):
        cid = _channel_id(topic)
        names = _channel_messages(topic)
        channels[cid] = {
            "address": topic,
            "description": _DESCRIBED[topic] + " Names may carry the GARDA_TOPIC_PREFIX.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        incoming = topic in CONTRACT_INPUTS
        operations[("consume-" if incoming else "publish-") + cid] = {
            "action": "receive" if incoming else "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": ("Garda reads " if incoming else "Garda writes ") + topic + ".",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{n}"} for n in names],
        }
    schemas = {
        t: _data_schema(t)
        for t in list_types()
        if t in {*(t for tp in CONTRACT_INPUTS for t in topics.TYPES_BY_TOPIC[tp]), *ALERT_TYPES}
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Garda",
            "version": "1",
            "description": "Event-driven protection cases for Indonesian migrant workers "
            "(PMI). Every topic is keyed by worker_id; the contract is docs/contract.md.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": _messages(), "schemas": schemas},
    }


def render() -> str:
    """The exact committed text of ``docs/asyncapi.json``."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.is_file() else ""
        if current != render():
            print(f"stale: {DOCUMENT.name} (run python -m schemas.asyncapi)", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(render(), encoding="utf-8")
    print(DOCUMENT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
