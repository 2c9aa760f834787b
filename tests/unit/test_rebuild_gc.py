"""During a replay the cyclic garbage collector does not run on allocation counts: ``_apply``
collects once every ``GC_EVERY_BATCHES`` batches, and ``_replay`` gives the collector back
as it found it."""

from __future__ import annotations

import gc

import pytest

from infra.settings import Settings
from streams import rebuild
from streams.processor import BatchReport


class _Processor:
    batches_applied = 0

    async def process(self, records: list) -> BatchReport:
        assert not gc.isenabled()
        return BatchReport()


async def test_a_replay_collects_every_so_many_batches_and_restores_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collections: list[int] = []
    monkeypatch.setattr(rebuild.gc, "collect", lambda *a: collections.append(1) or 0)

    async def replay_records(*args: object, **kwargs: object) -> tuple:
        processor = _Processor()
        for _ in range(2 * rebuild.GC_EVERY_BATCHES + 3):
            await rebuild._apply(None, processor, [], False, None)  # type: ignore[arg-type]
        return {}, 0

    monkeypatch.setattr(rebuild, "_replay_records", replay_records)
    assert gc.isenabled()
    await rebuild._replay(Settings(), None, [0], batch_size=1, republish=False)  # type: ignore[arg-type]
    assert len(collections) == 2
    assert gc.isenabled()
    gc.disable()
    try:
        await rebuild._replay(Settings(), None, [0], batch_size=1, republish=False)  # type: ignore[arg-type]
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
