"""The benchmark command parses its options and writes its report from given figures.

No timing is asserted: these are fake numbers, the point is the table, the files and the
ratios computed from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import build_parser, sizes
from garda.cli import parse_args as garda_args

FAKE = {
    "started_at": "2026-12-01T00:00:00+00:00",
    "mode": "quick",
    "events": 1000,
    "seed": 7,
    "machine": {"cpus": 2, "cpu_model": "test"},
    "throughput": {
        "raw": {"events_per_s": 40_000},
        "ceiling": {"events_per_s": 20_000},
        "peer": {"events_per_s": 4_000},
        "garda_live": {"events_per_s": 5_000},
    },
    "rebuild_ceiling": {"events_per_s": 30_000, "events": 20_000},
    "rebuild": {"events_per_s": 9_000, "events": 20_000, "peak_rss_mb_total": 300.0},
    "latency": {
        "round_trip": {"n": 3, "p50_ms": 20.0, "p99_ms": 50.0, "samples_s": [0.01, 0.02, 0.05]},
        "incident_idle": {"n": 2, "p99_ms": 100.0, "samples_s": [0.05, 0.1]},
    },
    "escalation": {"observed": {"p99_ms": 900.0}, "samples_s": [0.2, 0.9]},
    "escalation_backlog": {
        "expected": 2,
        "escalations": 2,
        "observed": {"n": 2, "p99_ms": 1500.0},
        "samples_s": [0.3, 1.5],
    },
    "hooks": {"rate": 20.0, "produced_to_received": {"n": 2, "p99_ms": 400.0}},
}


def test_quick_sizes_and_overrides() -> None:
    args = build_parser().parse_args(["--quick", "--events", "123", "--only", "rebuild"])
    assert args.only == ["rebuild"]
    s = sizes(args)
    assert s["events"] == 123 and s["rebuild_events"] == 20_000
    assert sizes(build_parser().parse_args([]))["claims"] == 200_000


def test_garda_bench_passes_its_arguments_through() -> None:
    args = garda_args(["bench", "--quick", "--only", "latency", "--help"])
    assert args.args == ["--quick", "--only", "latency", "--help"]
    with pytest.raises(SystemExit):  # other commands still refuse unknown options
        garda_args(["migrate", "--quick"])


def test_targets_are_ratios_to_the_baselines_of_the_same_run() -> None:
    rows = {r["name"]: r for r in report.targets(FAKE)}
    assert rows["rebuild throughput"]["ratio"] == 0.3  # ÷ the ceiling over its own topics
    assert rows["rebuild throughput"]["ok"] is False  # below 25,000/s
    assert rows["live worker throughput (backlog)"]["ratio"] == 1.25
    assert rows["live worker throughput (backlog)"]["ok"] is True
    assert rows["incident → case p99, idle"]["ratio"] == 2.0
    assert rows["incident → case p99, during a claims backlog"]["measured"] is None
    busy = rows["escalation fired after its deadline, p99, during a claims backlog"]
    assert busy["ratio"] == 30.0 and busy["ok"] is False
    none_seen = {"expected": 40, "escalations": 0, "observed": {"n": 0}}
    rows = {r["name"]: r for r in report.targets({**FAKE, "escalation_backlog": none_seen})}
    busy = rows["escalation fired after its deadline, p99, during a claims backlog"]
    assert busy["measured"] == float("inf") and busy["ok"] is False  # none seen: not "not run"


def test_scale_rows_take_the_worst_post_and_their_baselines() -> None:
    queue = {
        "post A": {"http": {"p99_ms": 30.0}, "sql": {"p99_ms": 3.0}},
        "post B": {"http": {"p99_ms": 60.0}, "sql": {"p99_ms": 6.0}},
        "headquarters": {"http": {"p99_ms": 99.0}, "sql": {"p99_ms": 1.0}},  # not one post
    }
    fake = {
        **FAKE,
        "scale": {
            "small": {"workers": 10_000, "rss_after_mb": 100.0},
            "big": {"workers": 1_000_000, "cases": 200_000, "queue": queue, "rss_after_mb": 105.0},
            "rss_ratio_after": 1.05,
            "second_round_growth_mb": 10.5,
        },
        "escalation_loaded": {
            "observed": {"p99_ms": 450.0},
            "preloaded_open_cases": 100_000,
            "timer_scan": {"scan_p99_ms": 2.0, "any_scan_p99_ms": 80.0},
        },
    }
    rows = report.targets(fake)
    http, sql = [r for r in rows if r["name"].startswith("case queue")]
    assert http["measured"] == 60.0 and http["ok"] is False and http["ratio"] == 10.0
    assert sql["measured"] == 6.0 and sql["ok"] is True
    loaded = [r for r in rows if "100,000 open cases" in r["name"]]
    assert loaded[0]["ratio"] == 0.5 and loaded[0]["ok"] is True  # ÷ the empty read model
    assert loaded[1]["ratio"] == 0.025  # the timer scan ÷ its former statements
    rss = [r for r in rows if r["name"].startswith("worker RSS")]
    assert rss[0]["ok"] is True and rss[0]["ratio"] == 1.05
    assert rss[1]["ok"] is False  # 10.5 MB is over 5 % of 105 MB


def test_incidents_never_seen_count_as_beyond_the_wait() -> None:
    lat = {"n": 90, "p99_ms": 100.0, "sent": 100, "missing": 10}
    rows = {r["name"]: r for r in report.targets({**FAKE, "latency": {"incident_backlog": lat}})}
    row = rows["incident → case p99, during a claims backlog"]
    assert row["measured"] == float("inf") and row["ok"] is False and row["ratio"] is None
    assert "> the wait" in report.markdown({**FAKE, "latency": {"incident_backlog": lat}})


def test_report_files(tmp_path: Path) -> None:
    paths = report.write(FAKE, tmp_path, "20261201T000000Z")
    data = json.loads(paths["json"].read_text())
    assert data["throughput"]["peer"]["events_per_s"] == 4_000
    assert len(data["targets"]) == 14
    md = paths["markdown"].read_text()
    assert "| live worker throughput (backlog) | 5,000 events/s | ≥ 1.0× peer | 1.250 |" in md
    assert "not run" in md  # the backlog latency was not measured
    hook = "| incident → signed webhook received p99, 20/s | 400 ms | ≤ 500 ms | 8.000 |"
    assert hook in md
    if "plot" in paths:  # matplotlib installed (the bench extra)
        assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![20261201T000000Z](20261201T000000Z.png)" in md
