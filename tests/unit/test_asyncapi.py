"""docs/asyncapi.json: generated from schemas/, up to date, well-formed AsyncAPI 3, and it
describes the events Garda really accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from schemas import asyncapi, topics
from schemas.envelope import encode, new_envelope
from tests.unit.test_schemas import FULL

DOC = asyncapi.document()
REPO = Path(__file__).resolve().parents[2]


def _resolve(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = DOC
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert asyncapi.main(["--check"]) == 0, "run python -m schemas.asyncapi"
    assert json.loads(asyncapi.DOCUMENT.read_text()) == DOC


def test_it_is_an_asyncapi_3_document() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["info"]["title"] and DOC["info"]["version"]
    for ref in _refs(DOC):
        _resolve(ref)  # raises KeyError on a dangling reference
    for cid, channel in DOC["channels"].items():
        assert re.fullmatch(r"[\w.-]+", cid)
        assert isinstance(channel["address"], str) and channel["messages"]
    for op in DOC["operations"].values():
        assert op["action"] in ("send", "receive")
        channel_ref = op["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        for m in op["messages"]:  # AsyncAPI 3: an operation's messages are its channel's
            assert m["$ref"].startswith(channel_ref + "/messages/")
    for message in DOC["components"]["messages"].values():
        Draft7Validator.check_schema(message["payload"])
    for schema in DOC["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)


def test_every_contract_topic_and_input_type_is_described() -> None:
    addresses = {c["address"]: c for c in DOC["channels"].values()}
    assert set(addresses) == {*asyncapi.CONTRACT_INPUTS, *topics.OUTPUTS}
    assert topics.COMMANDS not in addresses  # internal
    for topic in asyncapi.CONTRACT_INPUTS:
        names = {_resolve(r["$ref"])["name"] for r in addresses[topic]["messages"].values()}
        assert names == set(topics.TYPES_BY_TOPIC[topic])


@pytest.mark.parametrize(
    "type_", [t for topic in asyncapi.CONTRACT_INPUTS for t in topics.TYPES_BY_TOPIC[topic]]
)
def test_a_real_event_validates_against_its_message(type_: str) -> None:
    message = DOC["components"]["messages"][asyncapi._message_id(type_)]
    event = json.loads(
        encode(
            new_envelope(
                type=type_,
                subject=FULL[type_]["worker_id"],
                data=FULL[type_],
                id="E-1",
                source="test/x",
            )
        )
    )
    registry: Registry = Registry().with_resource(
        "urn:garda:asyncapi", Resource.from_contents(DOC, default_specification=DRAFT7)
    )
    schema = {"$ref": "urn:garda:asyncapi#/components/messages/" + asyncapi._message_id(type_)}
    payload = {"$ref": schema["$ref"] + "/payload"}
    Draft7Validator(payload, registry=registry).validate(event)
    bad = {**event, "type": "pmi.other"}
    assert not Draft7Validator(payload, registry=registry).is_valid(bad)
    assert message["contentType"] == "application/cloudevents+json"


def test_the_case_event_types_are_the_ones_the_handlers_emit() -> None:
    emitted = set()
    for path in (REPO / "handlers").glob("*.py"):
        emitted |= set(re.findall(r'"(garda\.case\.[a-z-]+)"', path.read_text()))
    assert emitted <= set(topics.CASE_EVENT_TYPES), emitted - set(topics.CASE_EVENT_TYPES)
    assert len(set(topics.CASE_EVENT_TYPES)) == len(topics.CASE_EVENT_TYPES)  # each once
