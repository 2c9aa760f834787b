"""``python -m bench`` (also ``garda bench``): the whole benchmark suite in one command.

    python -m bench --quick          # about 2-3 minutes
    python -m bench                  # the full run, under 20 minutes
    python -m bench --only rebuild --rebuild-events 1000000

Against the embedded stack (Tansu + a temporary PostgreSQL), or the given
``GARDA_KAFKA_BOOTSTRAP`` and ``GARDA_DATABASE_URL`` when both are set. Writes
``bench/results/<UTC timestamp>.json``, ``.md`` (the targets table) and ``.png`` (latency CDF,
throughput bars, escalation lateness). Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baselines, escalation, hook_latency, hotpath, live, rebuild, report, scale
from bench.common import RESULTS, Stack, generate, log, machine, produce_fast, versions

SUITES = ("hotpath", "throughput", "latency", "escalation", "rebuild", "hooks", "scale")
QUICK = {
    "events": 5_000,
    "rebuild_events": 20_000,
    "latency_seconds": 5.0,
    "claims": 20_000,
    "workers": 100_000,  # the read model of the scale suite (COPY)
    "cases": 20_000,
    "open_cases": 10_000,  # preloaded for the escalation run
    "scale_events": 1_000,
    "desk_repeat": 100,
}
FULL = {
    "events": 20_000,
    "rebuild_events": 200_000,
    "latency_seconds": 20.0,
    "claims": 200_000,
    "workers": 1_000_000,
    "cases": 200_000,
    "open_cases": 100_000,
    "scale_events": 3_000,
    "desk_repeat": 300,
}
SMALL_READ_MODEL = 10_000  # workers: the RSS comparison's small read model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes (under 3 minutes)")
    p.add_argument("--only", action="append", choices=SUITES, help="repeatable; default all")
    p.add_argument("--events", type=int, help="events for the throughput scenarios")
    p.add_argument("--rebuild-events", type=int, help="events replayed by garda rebuild")
    p.add_argument("--claims", type=int, help="bulk claims backlog during the latency run")
    p.add_argument("--rate", type=float, default=200.0, help="incidents/s for the latency runs")
    p.add_argument("--latency-seconds", type=float)
    p.add_argument("--escalation-cases", type=int, default=20)
    p.add_argument("--workers", type=int, help="workers COPYed into the scale suite's read model")
    p.add_argument("--cases", type=int, help="cases COPYed into the scale suite's read model")
    p.add_argument("--open-cases", type=int, help="open cases preloaded for the escalation run")
    p.add_argument("--scale-events", type=int, help="events per round of the RSS measure")
    p.add_argument("--desk-repeat", type=int, help="timed requests per token of the desk queue")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--profile", action="store_true", help="py-spy the live worker, pyinstrument the hot path"
    )
    p.add_argument("--output-dir", type=Path, default=RESULTS)
    p.add_argument("--keep-tmp", action="store_true", help="keep worker logs and data")
    return p


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    base = QUICK if args.quick else FULL
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}


async def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    size = sizes(args)
    only = set(args.only or SUITES)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "events": size["events"],
        "seed": args.seed,
        "sizes": size,
        "machine": machine(),
        "versions": versions(),
        "throughput": {},
        "latency": {},
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)  # profiles are written before the report
    tmp = Path(tempfile.mkdtemp(prefix="garda-bench-"))
    stack = await Stack.start(tmp)
    results["stack"] = (
        "embedded (Tansu memory, PostgreSQL durable=False)" if stack.embedded else "given"
    )
    try:
        if "hotpath" in only:
            events = generate(size["events"] + hotpath.BATCH, args.seed + 2)
            prof = args.output_dir / f"{stamp}.hotpath.txt" if args.profile else None
            results["hotpath"] = await hotpath.hotpath(stack, events, profile_to=prof)
            h = results["hotpath"]
            log(f"hotpath: {h['cpu_us_per_event']} µs CPU per event, {h['events_per_s']:,}/s")
        if "throughput" in only:
            n = size["events"]
            log(f"throughput: generating {n} events (seed {args.seed})")
            events = generate(n, args.seed)
            results["event_mix"] = dict(Counter(json.loads(v)["type"] for _, _, v in events))
            t = results["throughput"]
            for key in ("raw", "ceiling", "peer"):
                prefix = stack.prefix(key)
                await stack.topics(prefix)
                await produce_fast(stack.bootstrap, prefix, events)
                log(f"throughput: {key} baseline over {n} events")
                if key == "peer":
                    t[key] = await baselines.faust_peer(stack.bootstrap, prefix, n)
                else:
                    url = await stack.database("ceiling") if key == "ceiling" else None
                    t[key] = await baselines.consume(stack.bootstrap, prefix, n, url)
                log(f"throughput: {key} {t[key]['events_per_s']:,} events/s")
            prof = str(args.output_dir / f"{stamp}.pyspy.txt") if args.profile else None
            t["garda_live"] = await live.throughput(stack, events, profile_to=prof)
            log(f"throughput: garda worker {t['garda_live']['events_per_s']:,} events/s")
        if "latency" in only or "escalation" in only:
            prefix = stack.prefix("rt")
            await stack.topics(prefix)
            rt_events = live.incidents(max(1, int(args.rate * size["latency_seconds"])), "rt")
            results["latency"]["round_trip"] = await baselines.round_trip(
                stack.bootstrap, prefix, rt_events, args.rate
            )
        if "latency" in only:
            secs = size["latency_seconds"]
            results["latency"]["incident_idle"] = await live.incident_latency(
                stack, rate=args.rate, seconds=secs, scenario="lat-idle"
            )
            if size["claims"]:
                results["latency"]["incident_backlog"] = await live.incident_latency(
                    stack,
                    rate=args.rate,
                    seconds=secs,
                    backlog=live.claims_backlog(size["claims"]),
                    scenario="lat-backlog",
                )
        if "escalation" in only:
            results["escalation"] = await escalation.escalation_lateness(
                stack, cases=args.escalation_cases, spread=2.0
            )
            if size["open_cases"]:
                n = size["open_cases"]
                log(f"escalation: again over {n:,} open cases in the read model")
                results["escalation_loaded"] = await escalation.escalation_lateness(
                    stack,
                    cases=args.escalation_cases,
                    spread=2.0,
                    preload=n,
                    scenario="escalation-loaded",
                )
            if size["claims"]:
                results["escalation_backlog"] = await escalation.escalation_lateness(
                    stack,
                    cases=args.escalation_cases,
                    spread=2.0,
                    backlog=live.claims_backlog(size["claims"], "esc"),
                    scenario="esc-backlog",
                )
        if "scale" in only:
            log(
                f"scale: read models of {SMALL_READ_MODEL:,} and {size['workers']:,} workers"
                f" ({size['cases']:,} cases): desk queue over HTTP, worker RSS"
            )
            results["scale"] = await scale.rss_and_queue(
                stack,
                workers=size["workers"],
                small=SMALL_READ_MODEL,
                cases=size["cases"],
                events=size["scale_events"],
                repeat=size["desk_repeat"],
            )
        if "hooks" in only:
            log("hooks: alert committed -> receiver got it")
            results["hooks"] = await hook_latency.hook_latency(
                stack, rate=20.0, seconds=size["latency_seconds"]
            )
        if "rebuild" in only:
            n = size["rebuild_events"]
            log(f"rebuild: generating {n} events (seed {args.seed + 1})")
            events = generate(n, args.seed + 1)
            prefix = await rebuild.prepare(stack, events)
            del events
            url = await stack.database("rebuild_ceiling")
            log("rebuild: the ceiling over the same topics")
            results["rebuild_ceiling"] = await baselines.consume(stack.bootstrap, prefix, n, url)
            await stack.drop(url)
            log(f"rebuild: garda rebuild of {n} events")
            results["rebuild"] = await rebuild.run_rebuild(stack, prefix, n)
    finally:
        await stack.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind like Ctrl-C, so the stack is stopped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = asyncio.run(run(args, stamp))
    paths = report.write(results, args.output_dir, stamp)
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
