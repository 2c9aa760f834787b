"""The CloudEvents 1.0 envelope (Kafka protocol binding, structured and binary mode).

Interface (implementation filled in by schemas work):
- ``Envelope``: a decoded, validated input event.
- ``decode(key, value, headers, topic=None) -> Envelope``: raises ``InvalidEvent`` with the
  field and what was wrong. Structured mode: value is the JSON CloudEvent. Binary mode:
  ``ce_*`` headers carry the attributes and the value is the JSON ``data``.
- ``encode(envelope) -> bytes``: structured mode JSON (Garda's own output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Envelope:
    id: str
    source: str
    type: str
    subject: str
    data: dict[str, Any]
    time: datetime | None = None
    specversion: str = "1.0"
    datacontenttype: str = "application/json"
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key: (source, id)."""
        return (self.source, self.id)
