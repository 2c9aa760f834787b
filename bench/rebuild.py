"""``garda rebuild`` throughput and memory, against the ceiling on the same topics.

The N events are produced to a fresh topic prefix; ``python -m garda rebuild`` replays
them into an empty database in a child process. Its own figure (records / seconds from the
first fetch to the last commit, as it prints it) is the throughput; the peak resident set of
the rebuild's process tree (the parent plus its partition processes, sampled every 0.1 s
with psutil, summed per sample) is the memory. The ceiling (``bench.baselines.consume``
with PostgreSQL) reads and COPYs the same topics in the same run.

``BENCH_REBUILD_BEFORE=<checkout>`` also runs that checkout's ``garda rebuild`` (its own
code, this interpreter) over the same topics, just before this one, into its own empty
database: a same-invocation before/after (``rebuild.before`` in the JSON). The CPU time of
each rebuild's process tree (the waited children's getrusage) is reported too, steadier than
the rates on a shared machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import sys
import time
from typing import Any

from bench.common import REPO, Event, Stack, log, produce_fast

DONE = re.compile(r"rebuild: done, (\d+) records in ([\d.]+)s")


def _tree_rss(pid: int) -> tuple[int, int]:
    """(sum, largest single) RSS in bytes of ``pid`` and its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    sizes = []
    for p in procs:
        try:
            sizes.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(sizes), max(sizes, default=0)


async def prepare(stack: Stack, events: list[Event], scenario: str = "rebuild") -> str:
    prefix = stack.prefix(scenario)
    await stack.topics(prefix)
    log(f"rebuild: producing {len(events)} events")
    seconds = await produce_fast(stack.bootstrap, prefix, events)
    log(f"rebuild: produced in {seconds:.1f} s")
    return prefix


async def run_rebuild(stack: Stack, prefix: str, n: int, **env: str) -> dict[str, Any]:
    before = os.environ.get("BENCH_REBUILD_BEFORE")
    out: dict[str, Any] = {}
    if before:
        log(f"rebuild: first the checkout {before} over the same topics")
        out["before"] = await _run_one(stack, prefix, n, before, "b", **env)
        log(f"rebuild: before {out['before']['events_per_s']}/s")
    out = {**await _run_one(stack, prefix, n, str(REPO), "", **env), **out}
    if before:
        log(f"rebuild: after {out['events_per_s']}/s")
    return out


async def _run_one(
    stack: Stack, prefix: str, n: int, repo: str, tag: str, **env: str
) -> dict[str, Any]:
    url = await stack.database(f"rebuild{tag}{n}")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("GARDA_")}
    child_env.update(
        GARDA_KAFKA_BOOTSTRAP=stack.bootstrap,
        GARDA_DATABASE_URL=url,
        GARDA_TOPIC_PREFIX=prefix,
        GARDA_LOG_LEVEL="warning",
        GARDA_DATA_DIR=str(stack.tmp / "data-rebuild"),
        **env,
    )
    t0 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = usage.ru_utime + usage.ru_stime
    proc = subprocess.Popen(
        [sys.executable, "-m", "garda", "rebuild"],
        cwd=repo,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak_sum = peak_one = 0
    err_chunks: list[bytes] = []
    reader = asyncio.create_task(asyncio.to_thread(proc.stderr.read))  # type: ignore[union-attr]
    last_log = time.perf_counter()
    while proc.poll() is None:
        total, one = _tree_rss(proc.pid)
        peak_sum, peak_one = max(peak_sum, total), max(peak_one, one)
        await asyncio.sleep(0.1)
        if time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log(f"rebuild: running, peak RSS {peak_sum / 2**20:.0f} MB so far")
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    err_chunks.append(await reader)
    err = b"".join(err_chunks).decode(errors="replace")
    await stack.drop(url)
    m = DONE.search(err)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"rebuild failed ({proc.returncode}):\n{err[-3000:]}")
    records, seconds = int(m.group(1)), float(m.group(2))
    return {
        "events": n,
        "records": records,
        "seconds": seconds,
        "events_per_s": round(records / seconds),
        "wall_seconds_with_startup": round(wall, 2),
        # the process tree's CPU (start-up and imports included) per record
        "cpu_us_per_record": round(cpu / max(records, 1) * 1e6),
        "peak_rss_mb_total": round(peak_sum / 2**20, 1),
        "peak_rss_mb_largest_process": round(peak_one / 2**20, 1),
    }
