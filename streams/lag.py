"""Consumer lag per assigned input partition, as this process sees it."""

from __future__ import annotations

from typing import Any


def partition_progress(app: Any) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(topic, partition) -> (next offset to handle, fetch high-water mark or None while it
    is unknown).

    The fetch high-water mark is used because ListOffsets under-reports on Tansu
    (it returns the first offset of the last batch + 1 while a producer batches). The next offset to handle is the one after the last record this
    process handled, or the group's committed offset when it has handled none yet (just
    after a start or a rebalance).
    """
    out: dict[tuple[str, int], tuple[int, int | None]] = {}
    try:
        consumer = app.consumer
        assignment = sorted(consumer.assignment())
    except Exception:  # noqa: BLE001 - not started yet
        return out
    committed = getattr(consumer, "_committed_offset", {})
    positions = app.runtime.processor.positions
    for tp in assignment:
        hw = consumer.highwater(tp)
        done = positions.get((tp.topic, tp.partition))
        nxt = max(done + 1 if done is not None else 0, committed.get(tp) or 0)
        out[(tp.topic, tp.partition)] = (nxt, hw if hw is not None and hw >= 0 else None)
    return out


def partition_lag(app: Any) -> dict[tuple[str, int], int | None]:
    """(topic, partition) -> records not yet handled; None while the high-water is unknown."""
    return {
        tp: None if hw is None else max(0, hw - nxt)
        for tp, (nxt, hw) in partition_progress(app).items()
    }
