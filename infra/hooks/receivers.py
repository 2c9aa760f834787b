"""The receivers file (``GARDA_RECEIVERS``): who is told what, validated at start.

```toml
[[receivers]]
name = "kbri-kl-duty"                 # unique; [a-z0-9._-]
type = "webhook"                      # "webhook" (default) or "alertmanager"
url = "https://duty.example.org/garda"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"   # webhook only: Standard Webhooks secret
group_window = "30s"                  # optional: alerts of one case within it go out together
[receivers.match]                     # optional; every field given must match
posts = ["KBRI-KUALA-LUMPUR", "KJRI-JOHOR-BAHRU"]
severities = ["critical", "high"]
kinds = ["protection"]
types = ["garda.alert.*", "garda.case.opened"]
levels = [1, 2]
```
Rules decided where the design is silent: an Alertmanager receiver's ``url`` is the
Alertmanager base URL (Garda posts to ``{url}/api/v2/alerts``) and it needs no secret; a
webhook secret must be ``whsec_`` + base64 of at least 24 bytes; ``repr`` and every log line
show a secret as ``whsec_***``.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from errors import ConfigError
from handlers.policy import parse_duration
from infra.hooks.matching import Facts, Matcher, matcher_from_doc

TYPES = ("webhook", "alertmanager")
KEYS = ("name", "type", "url", "secret", "group_window", "match")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Receiver:
    name: str
    url: str
    type: str = "webhook"
    secret: str | None = field(default=None, repr=False)
    group_window: timedelta = timedelta(0)
    match: Matcher = field(default_factory=Matcher)

    def __repr__(self) -> str:
        secret = "whsec_***" if self.secret else None
        return (
            f"Receiver(name={self.name!r}, type={self.type!r}, url={self.url!r}, "
            f"secret={secret!r}, group_window={self.group_window}, match={self.match.describe()!r})"
        )

    @property
    def endpoint(self) -> str:
        if self.type == "alertmanager":
            return self.url.rstrip("/") + "/api/v2/alerts"
        return self.url

    def matches(self, facts: Facts) -> bool:
        return self.match.matches(facts, self.name)


@dataclass(frozen=True)
class Receivers:
    items: tuple[Receiver, ...] = ()

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, name: str) -> Receiver | None:
        return next((r for r in self.items if r.name == name), None)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.items]

    def matching(self, facts: Facts) -> list[Receiver]:
        return [r for r in self.items if r.matches(facts)]


def check_secret(secret: object, where: str) -> str:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ConfigError(f"{where}: a webhook secret must start with whsec_")
    try:
        raw = base64.b64decode(secret[len("whsec_") :] + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the part after whsec_ must be base64") from None
    if len(raw) < 24:
        raise ConfigError(f"{where}: the secret is too short (at least 24 bytes after whsec_)")
    return secret


def _receiver(doc: Any, where: str) -> Receiver:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(KEYS)})"
        )
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: required, lower-case letters, digits, '.', '_', '-'")
    where = f"{where} ({name})"
    type_ = doc.get("type", "webhook")
    if type_ not in TYPES:
        raise ConfigError(f"{where}.type: {type_!r} is not one of {', '.join(TYPES)}")
    url = doc.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        not isinstance(url, str)
        or parts is None
        or parts.scheme not in ("http", "https")
        or not parts.netloc
    ):
        raise ConfigError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
    secret = doc.get("secret")
    if type_ == "webhook":
        if secret is None:
            raise ConfigError(f"{where}.secret: required for a webhook receiver (whsec_…)")
        check_secret(secret, f"{where}.secret")
    elif secret is not None:
        raise ConfigError(f"{where}.secret: an alertmanager receiver takes no secret")
    window = timedelta(0)
    if "group_window" in doc:
        if doc["group_window"] in ("0", "0s"):
            window = timedelta(0)
        else:
            window = parse_duration(doc["group_window"], f"{where}.group_window")
    match = matcher_from_doc(doc.get("match", {}), f"{where}.match")
    return Receiver(name, url, type_, secret, window, match)


def receivers_from_dict(doc: dict[str, Any]) -> Receivers:
    unknown = sorted(set(doc) - {"receivers"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} (expected [[receivers]] tables)")
    raw = doc.get("receivers", [])
    if not isinstance(raw, list):
        raise ConfigError("receivers: expected [[receivers]] tables")
    items = [_receiver(r, f"receivers[{i}]") for i, r in enumerate(raw)]
    seen: set[str] = set()
    for r in items:
        if r.name in seen:
            raise ConfigError(f"receivers: the name {r.name!r} is used twice")
        seen.add(r.name)
    return Receivers(tuple(items))


def load_receivers(path: Path | str | None) -> Receivers:
    """Load and validate the receivers file; ``None`` means no receivers."""
    if path is None:
        return Receivers()
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"receivers {p}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"receivers {p}: not UTF-8 ({exc})") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"receivers {p}: not valid TOML: {exc}") from exc
    try:
        return receivers_from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"receivers {p}: {exc}") from exc


def names(receivers: Iterable[Receiver]) -> list[str]:
    return [r.name for r in receivers]
