"""The ``[hooks]`` table of the policy file: retries, horizon, timeout, never-muted alerts.

```toml
[hooks]
retry_schedule = ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]  # after attempt 1
horizon = "24h"          # no attempt later than this after the alert
timeout = "15s"          # per HTTP attempt
ack_link_ttl = "72h"     # how long an ack_url stays valid
[[hooks.never_mute]]     # never silenced, never inhibited
types = ["garda.alert.escalated"]
levels = [2]
[[hooks.never_mute]]
types = ["garda.case.opened"]
severities = ["critical"]
```
Every key is optional; the values above are the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from errors import ConfigError
from handlers.policy import Policy, parse_duration
from infra.hooks.matching import Matcher, RetryPlan, matcher_from_doc

DEFAULT_SCHEDULE = ("5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h")
DEFAULT_NEVER_MUTE = (
    {"types": ["garda.alert.escalated"], "levels": [2]},
    {"types": ["garda.case.opened"], "severities": ["critical"]},
)
KEYS = ("retry_schedule", "horizon", "timeout", "ack_link_ttl", "never_mute")


@dataclass(frozen=True)
class HooksPolicy:
    retry: RetryPlan
    timeout: timedelta
    ack_link_ttl: timedelta
    never_mute: tuple[Matcher, ...]


def hooks_policy(policy: Policy) -> HooksPolicy:
    """Validate the policy's ``[hooks]`` table (ConfigError naming the key)."""
    doc: dict[str, Any] = policy.hooks or {}
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"hooks: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(KEYS)})"
        )
    raw_schedule = doc.get("retry_schedule", list(DEFAULT_SCHEDULE))
    if not isinstance(raw_schedule, list) or not raw_schedule:
        raise ConfigError("hooks.retry_schedule: expected a non-empty list of durations")
    schedule = tuple(
        parse_duration(v, f"hooks.retry_schedule[{i}]") for i, v in enumerate(raw_schedule)
    )
    horizon = parse_duration(doc.get("horizon", "24h"), "hooks.horizon")
    timeout = parse_duration(doc.get("timeout", "15s"), "hooks.timeout")
    ttl = parse_duration(doc.get("ack_link_ttl", "72h"), "hooks.ack_link_ttl")
    raw_never = doc.get("never_mute", list(DEFAULT_NEVER_MUTE))
    if not isinstance(raw_never, list):
        raise ConfigError("hooks.never_mute: expected a list of matcher tables")
    never = tuple(matcher_from_doc(m, f"hooks.never_mute[{i}]") for i, m in enumerate(raw_never))
    if any(m.empty for m in never):
        raise ConfigError("hooks.never_mute: an empty matcher would make every alert unmutable")
    return HooksPolicy(RetryPlan(schedule, horizon), timeout, ttl, never)
