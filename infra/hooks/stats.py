"""Per-process delivery counters and latencies, for ``/metrics`` and the benchmark.

``record(receiver, outcome, latency)`` is called by the dispatcher after every attempt;
``snapshot()`` returns the counters; ``latencies()`` the recent "alert committed → receiver
answered 2xx" seconds (bounded). A metrics module reads these (per process: sum them over
workers), or registers ``on_record`` callbacks to feed its own counters.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from threading import Lock

_lock = Lock()
_counts: Counter = Counter()  # (receiver, outcome) -> attempts
_latency: deque[float] = deque(maxlen=10_000)
_callbacks: list[Callable[[str, str, float | None, float | None], None]] = []


def record(
    receiver: str, outcome: str, attempt_seconds: float | None, delivered_after: float | None
) -> None:
    """One attempt: outcome (delivered, retry, failed, disabled), its duration, and for a
    success how long after the alert's commit the receiver had it."""
    with _lock:
        _counts[(receiver, outcome)] += 1
        if delivered_after is not None:
            _latency.append(delivered_after)
    for cb in list(_callbacks):
        cb(receiver, outcome, attempt_seconds, delivered_after)


def on_record(cb: Callable[[str, str, float | None, float | None], None]) -> None:
    _callbacks.append(cb)


def snapshot() -> dict[tuple[str, str], int]:
    with _lock:
        return dict(_counts)


def latencies() -> list[float]:
    with _lock:
        return list(_latency)


def reset() -> None:
    with _lock:
        _counts.clear()
        _latency.clear()
