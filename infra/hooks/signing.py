"""What a delivery sends: the CloudEvent body (or Alertmanager's alert list) and its signature.

Webhook body (structured CloudEvent, ``application/cloudevents+json``): ``id`` is the
delivery id (= ``webhook-id``), ``type``/``subject``/``data`` are those of the delivery's
newest alert, and ``data.alerts`` lists every alert of the delivery (one, or several from the
grouping window) as ``{id, type, time, data}``; ``data.held`` lists the alerts a critical
case held back (inhibition) and releases with this delivery; ``data.delivered_to`` names
the receiver; ``data.ack_url`` is the
acknowledge link of the case, when the alert is about one. The body is fixed at the first
attempt, so every retry carries the same bytes under the same ``webhook-id``.

Signature: Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) made by the ``standardwebhooks`` library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

CE_SOURCE = "garda/hooks"


def cloudevent_body(
    delivery_id: str,
    receiver: str,
    alerts: Sequence[Mapping[str, Any]],
    held: Sequence[Mapping[str, Any]] = (),
    ack_url: str | None = None,
) -> bytes:
    """The structured CloudEvent of one delivery (``alerts`` are the alerts' CloudEvents)."""
    if not alerts:
        raise ValueError("a delivery lists at least one alert")
    last = alerts[-1]
    data = dict(last.get("data") or {})
    data["delivered_to"] = receiver
    data["alerts"] = [_brief(a) for a in alerts]
    if held:
        data["held"] = [_brief(a) for a in held]
    if ack_url:
        data["ack_url"] = ack_url
    event = {
        "specversion": "1.0",
        "id": delivery_id,
        "source": CE_SOURCE,
        "type": last.get("type"),
        "subject": last.get("subject"),
        "time": alerts[0].get("time"),
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _brief(a: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": a.get("id"), "type": a.get("type"), "time": a.get("time"), "data": a.get("data")}


def alertmanager_body(
    alerts: Sequence[Mapping[str, Any]],
    held: Sequence[Mapping[str, Any]] = (),
    ack_url: str | None = None,
    generator_url: str | None = None,
) -> bytes:
    """Alertmanager v2 ``postableAlerts``: one alert per Garda alert, labelled for routing.

    Labels: ``alertname`` (the type with dots as underscores, e.g. ``garda_alert_escalated``),
    ``alert_type``, ``post`` (the post the case is at), ``severity``, ``kind``, ``case_id``,
    ``worker_id``, ``level``, ``escalated_to``; annotations: ``summary``, ``ack_url``.
    """
    out = []
    for a in [*alerts, *held]:
        data = a.get("data") or {}
        labels = {
            "alertname": str(a.get("type", "")).replace(".", "_").replace("-", "_"),
            "alert_type": str(a.get("type", "")),
            "source": "garda",
        }
        for label, key in (
            ("post", "post_id"),
            ("severity", "severity"),
            ("kind", "kind"),
            ("case_id", "case_id"),
            ("worker_id", "worker_id"),
            ("escalated_to", "escalated_to"),
        ):
            if data.get(key) is not None:
                labels[label] = str(data[key])
        level = data.get("level", data.get("escalation_level"))
        if level is not None:
            labels["level"] = str(level)
        annotations = {"summary": summary(a), "alert_id": str(a.get("id"))}
        if ack_url:
            annotations["ack_url"] = ack_url
        item: dict[str, Any] = {"labels": labels, "annotations": annotations}
        if a.get("time"):
            item["startsAt"] = a["time"]
        if generator_url:
            item["generatorURL"] = generator_url
        out.append(item)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def summary(a: Mapping[str, Any]) -> str:
    data = a.get("data") or {}
    bits = [str(a.get("type", "alert"))]
    for key in ("case_id", "severity", "post_id", "level", "reason"):
        if data.get(key) is not None:
            bits.append(f"{key}={data[key]}")
    return " ".join(bits)


def sign(secret: str, msg_id: str, body: bytes, at: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for this body."""
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
