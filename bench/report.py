"""Turn one run's results into the targets table, a Markdown summary and PNG plots.

``targets(results)`` is the table the issue asks for: each target as measured / target /
ratio to its baseline in the same run. A figure the run did not measure is ``None`` and
shows as "not run". Plots need matplotlib (``pip install -e '.[bench]'``); without it the
JSON and the Markdown are still written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b or a == float("inf"):
        return None
    return round(a / b, 3)


def _p99_with_missing(lat: dict[str, Any] | None) -> float | None:
    """p99 in ms, counting the incidents never seen as infinitely late: when more than 1%
    are missing, the p99 is beyond the wait (``inf``), not the p99 of the ones seen."""
    if not lat or not lat.get("n"):
        return float("inf") if lat and lat.get("sent") else None
    if lat.get("missing", 0) > 0.01 * lat.get("sent", lat["n"]):
        return float("inf")
    return lat.get("p99_ms")


def _escalation_p99(esc: dict[str, Any] | None) -> float | None:
    """p99 in ms of the escalations observed, ``inf`` when more than 1% of the expected
    ones were never seen in the wait (the same rule as the incidents')."""
    if not esc:
        return None
    expected = esc.get("expected", 0)
    missing = expected - esc.get("escalations", 0)
    return _p99_with_missing(
        {"n": esc.get("escalations", 0), "sent": expected, "missing": missing, **esc["observed"]}
    )


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows: name, measured, unit, target (text), ok, ratio, baseline (text)."""
    ceiling = _get(r, "throughput", "ceiling", "events_per_s")
    peer = _get(r, "throughput", "peer", "events_per_s")
    live = _get(r, "throughput", "garda_live", "events_per_s")
    rebuild = _get(r, "rebuild", "events_per_s")
    rebuild_ceiling = _get(r, "rebuild_ceiling", "events_per_s") or ceiling
    rt_p99 = _get(r, "latency", "round_trip", "p99_ms")
    idle_p99 = _p99_with_missing(_get(r, "latency", "incident_idle"))
    busy_p99 = _p99_with_missing(_get(r, "latency", "incident_backlog"))
    esc_p99 = _get(r, "escalation", "observed", "p99_ms")
    esc_busy_p99 = _escalation_p99(r.get("escalation_backlog"))
    rss = _get(r, "rebuild", "peak_rss_mb_total")
    hook_p99 = _get(r, "hooks", "produced_to_received", "p99_ms")
    hook_rate = _get(r, "hooks", "rate")
    rows = [
        {
            "name": "rebuild throughput",
            "measured": rebuild,
            "unit": "events/s",
            "target": "≥ 25,000 and ≥ 0.25× ceiling",
            "ok": None
            if rebuild is None
            else rebuild >= 25_000 and rebuild >= 0.25 * (rebuild_ceiling or 0),
            "ratio": _ratio(rebuild, rebuild_ceiling),
            "baseline": "÷ ceiling (a) on the same topics",
        },
        {
            "name": f"rebuild peak RSS at {_get(r, 'rebuild', 'events') or '?'} events",
            "measured": rss,
            "unit": "MB",
            "target": "≤ 1,024 MB at 10 M events",
            "ok": None if rss is None else rss <= 1024,
            "ratio": None,
            "baseline": "",
        },
        {
            "name": "live worker throughput (backlog)",
            "measured": live,
            "unit": "events/s",
            "target": "≥ 1.0× peer",
            "ok": None if live is None or not peer else live >= peer,
            "ratio": _ratio(live, peer),
            "baseline": "÷ Faust decode-only peer (b)",
        },
        {
            "name": "incident → case p99, idle",
            "measured": idle_p99,
            "unit": "ms",
            "target": "≤ 250 ms",
            "ok": None if idle_p99 is None else idle_p99 <= 250,
            "ratio": _ratio(idle_p99, rt_p99),
            "baseline": "÷ raw round trip p99 (c)",
        },
        {
            "name": "incident → case p99, during a claims backlog",
            "measured": busy_p99,
            "unit": "ms",
            "target": "≤ 250 ms",
            "ok": None if busy_p99 is None else busy_p99 <= 250,
            "ratio": _ratio(busy_p99, rt_p99),
            "baseline": "÷ raw round trip p99 (c)",
        },
        {
            "name": "escalation fired after its deadline, p99",
            "measured": esc_p99,
            "unit": "ms",
            "target": "≤ 1,000 ms",
            "ok": None if esc_p99 is None else esc_p99 <= 1000,
            "ratio": _ratio(esc_p99, rt_p99),
            "baseline": "÷ raw round trip p99 (c)",
        },
        {
            "name": "escalation fired after its deadline, p99, during a claims backlog",
            "measured": esc_busy_p99,
            "unit": "ms",
            "target": "≤ 1,000 ms",
            "ok": None if esc_busy_p99 is None else esc_busy_p99 <= 1000,
            "ratio": _ratio(esc_busy_p99, rt_p99),
            "baseline": "÷ raw round trip p99 (c)",
        },
        {
            "name": "incident → signed webhook received p99"
            + (f", {hook_rate:g}/s" if hook_rate else ""),
            "measured": hook_p99,
            "unit": "ms",
            "target": "≤ 500 ms",
            "ok": None if hook_p99 is None else hook_p99 <= 500,
            "ratio": _ratio(hook_p99, rt_p99),
            "baseline": "÷ raw round trip p99 (c)",
        },
    ]
    rows += _scale_rows(r)
    return rows


def _post_queues(r: dict[str, Any]) -> dict[str, Any]:
    q = _get(r, "scale", "big", "queue") or {}
    return {k: v for k, v in q.items() if k.startswith("post ")}


def _scale_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The read model at scale (``bench.scale``): the desk queue, the timer with many open
    cases, worker RSS against the number of workers."""
    big = _get(r, "scale", "big") or {}
    size = f"{big.get('workers', 0):,} workers, {big.get('cases', 0):,} cases" if big else ""
    posts = _post_queues(r)
    http = max((v["http"]["p99_ms"] for v in posts.values()), default=None)
    sql = max((v["sql"]["p99_ms"] for v in posts.values()), default=None)
    loaded = _get(r, "escalation_loaded", "observed", "p99_ms")
    empty = _get(r, "escalation", "observed", "p99_ms")
    n_open = _get(r, "escalation_loaded", "preloaded_open_cases")
    scan = _get(r, "escalation_loaded", "timer_scan", "scan_p99_ms")
    any_scan = _get(r, "escalation_loaded", "timer_scan", "any_scan_p99_ms")
    rss_big = _get(r, "scale", "big", "rss_after_mb")
    rss_ratio = _get(r, "scale", "rss_ratio_after")
    growth = _get(r, "scale", "second_round_growth_mb")
    small = _get(r, "scale", "small", "workers")
    return [
        {
            "name": f"case queue first page p99, one post, HTTP ({size or 'not run'})",
            "measured": http,
            "unit": "ms",
            "target": "≤ 50 ms",
            "ok": None if http is None else http <= 50,
            "ratio": _ratio(http, sql),
            "baseline": "÷ the same statement without HTTP",
        },
        {
            "name": "case queue first page p99, one post, the statement alone",
            "measured": sql,
            "unit": "ms",
            "target": "≤ 50 ms",
            "ok": None if sql is None else sql <= 50,
            "ratio": None,
            "baseline": "",
        },
        {
            "name": f"escalation fired after its deadline, p99, {n_open or 0:,} open cases",
            "measured": loaded,
            "unit": "ms",
            "target": "≤ 1,000 ms",
            "ok": None if loaded is None else loaded <= 1000,
            "ratio": _ratio(loaded, empty),
            "baseline": "÷ the same run on an empty read model",
        },
        {
            "name": f"timer scan p99, {n_open or 0:,} open cases",
            "measured": scan,
            "unit": "ms",
            "target": "well inside the 1 s timer",
            "ok": None if scan is None else scan <= 100,
            "ratio": _ratio(scan, any_scan),
            "baseline": "÷ the former partition = ANY($1) statements",
        },
        {
            "name": f"worker RSS, {big.get('workers', 0):,} workers in the read model",
            "measured": rss_big,
            "unit": "MB",
            "target": f"flat: ≤ 1.1× with {small or 0:,} workers",
            "ok": None if rss_ratio is None else rss_ratio <= 1.1,
            "ratio": rss_ratio,
            "baseline": f"÷ the same events on {small or 0:,} workers",
        },
        {
            "name": "worker RSS growth over a second round of new workers",
            "measured": growth,
            "unit": "MB",
            "target": "≤ 5 % of RSS (no per-worker cache)",
            "ok": None if growth is None or not rss_big else growth <= 0.05 * rss_big,
            "ratio": None if growth is None or not rss_big else round(growth / rss_big, 3),
            "baseline": "÷ the RSS after it",
        },
    ]


def _fmt(v: Any) -> str:
    if v is None:
        return "not run"
    if v == float("inf"):
        return "> the wait (over 1% never seen)"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def markdown(r: dict[str, Any], plots: list[str] | None = None) -> str:
    m = r.get("machine", {})
    lines = [
        f"# Garda benchmark, {r.get('started_at', '?')}",
        "",
        f"{r.get('mode', '?')} run, {r.get('events', '?')} events (seed {r.get('seed', '?')}), "
        f"{m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}); broker and database on the "
        "same machine. Ratios are against baselines measured in this same run.",
        "",
        "| target | measured | target | ratio | baseline | met |",
        "|---|---:|---|---:|---|:-:|",
    ]
    for row in targets(r):
        ok = {True: "yes", False: "**no**", None: ""}[row["ok"]]
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        measured = _fmt(row["measured"])
        if row["measured"] is not None and row["measured"] != float("inf"):
            measured += f" {row['unit']}"
        lines.append(
            f"| {row['name']} | {measured} | {row['target']} | {ratio} | {row['baseline']} | {ok} |"
        )
    lines += ["", "| baseline / scenario | events/s |", "|---|---:|"]
    for key, label in (
        ("raw", "raw aiokafka getmany + json.loads"),
        ("ceiling", "(a) ceiling: raw + COPY into PostgreSQL"),
        ("peer", "(b) peer: plain Faust agent, decode only"),
        ("garda_live", "garda worker, full pipeline"),
    ):
        v = _get(r, "throughput", key, "events_per_s")
        if v is not None:
            lines.append(f"| {label} | {v:,} |")
    rc = _get(r, "rebuild_ceiling", "events_per_s")
    if rc is not None:
        n = _get(r, "rebuild_ceiling", "events")
        lines.append(f"| (a) ceiling over the rebuild's {n:,} events | {rc:,} |")
    rb = _get(r, "rebuild", "events_per_s")
    if rb is not None:
        lines.append(f"| garda rebuild | {rb:,} |")
    rt = _get(r, "latency", "round_trip")
    if rt and rt.get("n"):
        lines += [
            "",
            f"(c) raw produce → consume round trip: p50 {rt['p50_ms']} ms, p99 {rt['p99_ms']} ms "
            f"({rt['n']} events).",
        ]
    health = _get(r, "scale", "big", "health", "http", "p99_ms")
    if health is not None:
        lines += [
            "",
            f"HTTP floor of the scale suite's worker: `GET /health` p99 {health} ms (no token,"
            " no case query; the same worker and connection as the desk queue rows).",
        ]
    for name in plots or []:
        lines += ["", f"![{Path(name).stem}]({Path(name).name})"]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], out_stem: Path) -> list[Path]:
    """latency CDF, throughput bars, escalation lateness; returns the PNG paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    ax = axes[0]
    for key, label in (
        ("round_trip", "raw produce → consume (c)"),
        ("incident_idle", "incident → case, idle"),
        ("incident_backlog", "incident → case, claims backlog"),
    ):
        s = _get(r, "latency", key, "samples_s")
        if s:
            xs = [v * 1000 for v in sorted(s)]
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
    ax.axvline(250, color="grey", ls=":", lw=1, label="target 250 ms")
    ax.set(xlabel="ms", ylabel="fraction", title="latency CDF", xscale="log")
    ax.legend(fontsize=8)
    ax = axes[1]
    bars = [
        (label, _get(r, *path))
        for label, path in (
            ("raw", ("throughput", "raw", "events_per_s")),
            ("ceiling (a)", ("throughput", "ceiling", "events_per_s")),
            ("peer (b)", ("throughput", "peer", "events_per_s")),
            ("garda live", ("throughput", "garda_live", "events_per_s")),
            ("garda rebuild", ("rebuild", "events_per_s")),
        )
    ]
    bars = [(k, v) for k, v in bars if v]
    ax.bar([k for k, _ in bars], [v for _, v in bars], color="tab:blue")
    for i, (_, v) in enumerate(bars):
        ax.text(i, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="events/s", title="throughput (same events)", yscale="log")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax = axes[2]
    s = _get(r, "escalation", "samples_s")
    if s:
        ax.hist([v * 1000 for v in s], bins=20, color="tab:orange", label="empty read model")
    ax.axvline(1000, color="grey", ls=":", lw=1, label="target 1 s")
    loaded = _get(r, "escalation_loaded", "samples_s")
    if loaded:
        n = _get(r, "escalation_loaded", "preloaded_open_cases") or 0
        ax.hist(
            [v * 1000 for v in loaded],
            bins=20,
            color="tab:red",
            alpha=0.5,
            label=f"{n:,} open cases",
        )
    ax.set(xlabel="ms after the deadline", ylabel="escalations", title="escalation lateness")
    ax.legend(fontsize=8)
    ax = axes[3]
    queues = _get(r, "scale", "big", "queue") or {}
    if queues:
        labels = [k.replace("post ", "") for k in queues]
        xs = list(range(len(labels)))
        ax.bar([x - 0.2 for x in xs], [v["http"]["p99_ms"] for v in queues.values()], 0.4,
               label="HTTP p99")  # fmt: skip
        ax.bar([x + 0.2 for x in xs], [v["sql"]["p99_ms"] for v in queues.values()], 0.4,
               label="statement alone p99")  # fmt: skip
        ax.set_xticks(xs, labels, rotation=15, fontsize=7)
        big = _get(r, "scale", "big") or {}
        ax.set_title(
            f"desk queue, first page ({big.get('workers', 0):,} workers,"
            f" {big.get('cases', 0):,} cases)",
            fontsize=9,
        )
    ax.axhline(50, color="grey", ls=":", lw=1, label="target 50 ms")
    ax.set(ylabel="ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_stem.with_suffix(".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)
    return written


def write(results: dict[str, Any], out_dir: Path, stamp: str) -> dict[str, Path]:
    """``<stamp>.json``, ``<stamp>.md`` and ``<stamp>.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / stamp
    json_path = stem.with_suffix(".json")
    results = {**results, "targets": targets(results)}
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    pngs = plot(results, stem)
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(results, [p.name for p in pngs]))
    out = {"json": json_path, "markdown": md_path}
    if pngs:
        out["plot"] = pngs[0]
    return out


if __name__ == "__main__":  # python -m bench.report RESULTS.json: write its .md and .png again
    import sys

    src = Path(sys.argv[1])
    paths = write(json.loads(src.read_text()), src.parent, src.stem)
    print(paths["markdown"].read_text())
