"""The /metrics exposition: names, labels and values, per-process apart from database-wide."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from infra import metrics
from streams.processor import BatchReport

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_database_gauges_have_their_own_names_and_values() -> None:
    snap = metrics.DatabaseSnapshot(
        cases_open={("KBRI-DOHA", "critical"): 2, ("HQ", "low"): 1},
        outbox_backlog=7,
        outbox_oldest=NOW - timedelta(seconds=42),
        outbox_parked=1,
        processed_events=1234,
        deadletters=3,
        deadlines_due=2,
        oldest_due=NOW - timedelta(seconds=90),
        sources=(
            metrics.SourceStatus(
                "kjri-hong-kong/case-desk", NOW - timedelta(minutes=5), NOW, False
            ),
            metrics.SourceStatus("bpjs/claims", None, NOW - timedelta(hours=2), True),
        ),
        taken_at=NOW,
    )
    got = samples(metrics.render(metrics.DatabaseCollector(snap), registry=CollectorRegistry()))
    assert got == {
        ("garda_db_cases_open", (("post_id", "HQ"), ("severity", "low"))): 1.0,
        ("garda_db_outbox_parked", ()): 1.0,
        ("garda_db_cases_open", (("post_id", "KBRI-DOHA"), ("severity", "critical"))): 2.0,
        ("garda_db_outbox_backlog", ()): 7.0,
        ("garda_db_outbox_oldest_age_seconds", ()): 42.0,
        ("garda_db_processed_events", ()): 1234.0,
        ("garda_db_deadletters", ()): 3.0,
        ("garda_db_deadlines_due", ()): 2.0,
        ("garda_db_deadline_overdue_seconds", ()): 90.0,
        ("garda_db_source_silence_seconds", (("source", "bpjs/claims"),)): 7200.0,
        ("garda_db_source_silence_seconds", (("source", "kjri-hong-kong/case-desk"),)): 300.0,
        ("garda_db_source_silent", (("source", "bpjs/claims"),)): 1.0,
        ("garda_db_source_silent", (("source", "kjri-hong-kong/case-desk"),)): 0.0,
    }


def test_empty_outbox_has_age_zero() -> None:
    snap = metrics.DatabaseSnapshot(taken_at=NOW)
    got = samples(metrics.render(metrics.DatabaseCollector(snap), registry=CollectorRegistry()))
    assert got[("garda_db_outbox_oldest_age_seconds", ())] == 0.0
    assert got[("garda_db_outbox_backlog", ())] == 0.0


def test_live_gauges_skip_unknown_highwater() -> None:
    live = metrics.LiveGauges({("pmi.incidents.v1", 0): 5, ("pmi.incidents.v1", 1): None}, 2)
    got = samples(metrics.render(live, registry=CollectorRegistry()))
    assert got == {
        ("garda_consumer_lag", (("partition", "0"), ("topic", "pmi.incidents.v1"))): 5.0,
        ("garda_consumer_assigned_partitions", ()): 2.0,
    }


def test_a_committed_batch_adds_to_the_process_counters() -> None:
    before = {
        "ok": value(
            "garda_events_total",
            topic="pmi.incidents.v1",
            type="pmi.incident.reported",
            outcome="opened",
        ),
        "bad": value(
            "garda_events_total", topic="pmi.incidents.v1", type="unknown", outcome="invalid"
        ),
        "dl": value("garda_deadletters_total", topic="pmi.incidents.v1", reason="invalid"),
        "esc": value("garda_escalations_total", level="2"),
        "late_n": value("garda_escalation_lateness_seconds_count"),
        "late_sum": value("garda_escalation_lateness_seconds_sum"),
        "late_le10": value("garda_escalation_lateness_seconds_bucket", le="10.0"),
        "alert": value("garda_alerts_total", alert="escalated"),
    }
    report = BatchReport(
        labelled=Counter(
            {
                ("pmi.incidents.v1", "pmi.incident.reported", "opened"): 3,
                ("pmi.incidents.v1", "pmi.made-up.type", "invalid"): 1,
            }
        ),
        deadletters=Counter({("pmi.incidents.v1", "invalid"): 1}),
        escalations=[(2, NOW - timedelta(seconds=4)), (2, NOW - timedelta(seconds=30))],
        alerts=Counter({"escalated": 2}),
    )
    report.record_metrics(NOW)
    assert (
        value(
            "garda_events_total",
            topic="pmi.incidents.v1",
            type="pmi.incident.reported",
            outcome="opened",
        )
        - before["ok"]
        == 3
    )
    # An event type Garda does not know never becomes a label value of its own.
    assert (
        value("garda_events_total", topic="pmi.incidents.v1", type="unknown", outcome="invalid")
        - before["bad"]
        == 1
    )
    assert (
        value(
            "garda_events_total",
            topic="pmi.incidents.v1",
            type="pmi.made-up.type",
            outcome="invalid",
        )
        == 0
    )
    assert (
        value("garda_deadletters_total", topic="pmi.incidents.v1", reason="invalid") - before["dl"]
        == 1
    )
    assert value("garda_escalations_total", level="2") - before["esc"] == 2
    assert value("garda_escalation_lateness_seconds_count") - before["late_n"] == 2
    assert value("garda_escalation_lateness_seconds_sum") - before["late_sum"] == pytest.approx(34)
    assert value("garda_escalation_lateness_seconds_bucket", le="10.0") - before["late_le10"] == 1
    assert value("garda_alerts_total", alert="escalated") - before["alert"] == 2


def test_deliveries_are_counted_by_receiver_and_outcome() -> None:
    before = value("garda_deliveries_total", receiver="hq-chat", outcome="delivered")
    n_before = value("garda_delivery_latency_seconds_count", receiver="hq-chat")
    metrics.record_delivery("hq-chat", "delivered", latency=0.3)
    metrics.record_delivery("hq-chat", "failed")
    assert value("garda_deliveries_total", receiver="hq-chat", outcome="delivered") - before == 1
    assert value("garda_delivery_latency_seconds_count", receiver="hq-chat") - n_before == 1
    with pytest.raises(ValueError, match="unknown delivery outcome"):
        metrics.record_delivery("hq-chat", "sort-of")


def test_render_serves_both_registries_without_name_clashes() -> None:
    text = metrics.render(metrics.DatabaseCollector(metrics.DatabaseSnapshot(taken_at=NOW)))
    names = [f.name for f in text_string_to_metric_families(text.decode())]
    assert len(names) == len(set(names))
    assert {"garda_events", "garda_db_outbox_backlog", "process_cpu_seconds"} <= set(names)
