"""Decoding, validation and digest per input event, the precise path against ``decode``.

    python -m bench.decode [--events 20000] [--rounds 5] [--seed 1]

The events are the simulator's mix (``infra.simulate.traffic``). "precise" is the decoder as
it was before the fast path, still in the product as its fallback (``_build(_json(value))``,
which writes every refusal's message); "decode" is ``schemas.envelope.decode`` (the fast path
first). Each figure is ``BatchProcessor._decode``'s work: decode plus ``content_digest``. The
two are timed in alternating rounds in one process and the best round of each is reported,
in CPU µs per event (the machine is shared: compare the two figures of one run).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

from infra.simulate import traffic
from schemas.envelope import _build, _fast_structured, _json, decode
from streams.processor import content_digest

Record = tuple[str, bytes, bytes]  # (logical topic, key, value)


def precise(topic: str, key: bytes, value: bytes) -> str:
    return content_digest(_build(_json(value), key, topic))


def fast(topic: str, key: bytes, value: bytes) -> str:
    return content_digest(decode(key, value, [], topic=topic))


def cpu_us(fn: Callable[[str, bytes, bytes], str], records: list[Record]) -> float:
    t0 = time.process_time()
    for topic, key, value in records:
        fn(topic, key, value)
    return (time.process_time() - t0) / len(records) * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    records = [
        (topic, key.encode(), value)
        for topic, key, value in itertools.islice(traffic(args.seed), args.events)
    ]
    mismatched = sum(precise(*r) != fast(*r) for r in records)
    taken = sum(_fast_structured(key, value, topic) is not None for topic, key, value in records)
    best = {"precise": float("inf"), "decode": float("inf")}
    for _ in range(args.rounds):
        best["precise"] = min(best["precise"], cpu_us(precise, records))
        best["decode"] = min(best["decode"], cpu_us(fast, records))
    print(
        f"decode: {len(records)} events, fast path taken by {taken / len(records):.1%}, "
        f"digests differing: {mismatched}"
    )
    print(f"precise (before): {best['precise']:.1f} µs CPU per event (decode + digest)")
    print(f"decode  (after):  {best['decode']:.1f} µs CPU per event (decode + digest)")
    print(f"ratio: {best['precise'] / best['decode']:.2f}x")


if __name__ == "__main__":
    main()
