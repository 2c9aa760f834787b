"""The content digest is stored (``processed_events.digest``): its fast orjson path must hash
exactly the text the first definition (``json.dumps``, sorted keys, ASCII) hashed, or a
redelivery after an upgrade would look like a different event with the same id."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import Envelope
from streams.processor import content_digest


def reference_digest(env: Envelope) -> str:
    doc = {
        "type": env.type,
        "subject": env.subject,
        "time": env.time.timestamp() if env.time is not None else None,
        "data": env.data,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_times = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(8999, 12, 31)
).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=400, deadline=None)
@given(data=st.dictionaries(_text, _json, max_size=6), time=_times, subject=_text)
def test_fast_digest_hashes_what_json_dumps_wrote(
    data: dict, time: datetime | None, subject: str
) -> None:
    env = Envelope(id="e", source="s", type="pmi.incident.reported", subject=subject, data=data)
    env = Envelope(**{**env.__dict__, "time": time})
    assert content_digest(env) == reference_digest(env)


def test_times_near_the_epoch_and_non_ascii_take_the_json_path() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for time in (epoch, epoch + timedelta(microseconds=1), epoch - timedelta(microseconds=7)):
        for data in ({"note": "plain"}, {"note": "Bahasa é ü \x7f \u2028"}, {"n": 2**80}):
            env = Envelope(id="e", source="s", type="t", subject="W", data=data, time=time)
            assert content_digest(env) == reference_digest(env)
