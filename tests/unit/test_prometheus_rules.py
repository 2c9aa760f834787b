"""The shipped Prometheus files: valid for promtool, and the alert rules' own unit tests pass.

Needs ``promtool`` (Debian package ``prometheus``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DIR = Path(__file__).resolve().parents[2] / "infra" / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install the Debian package `prometheus` (apt-get install -y prometheus)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    done = promtool("check", "rules", "garda-rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_scrape_config_is_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", "garda-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = (DIR / "garda-rules.yml").read_text()
    tests = (DIR / "garda-rules.test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) == 10
    untested = [a for a in alerts if f"alertname: {a}" not in tests]
    assert untested == []
