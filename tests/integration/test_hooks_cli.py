"""``garda silences …`` and ``garda hooks …`` against a real database."""

from __future__ import annotations

import pytest

from tests.integration.harness import db_fetch, run_cli

pytestmark = pytest.mark.integration


async def test_silences_add_list_expire_are_audited(stack_settings):
    assert run_cli(stack_settings, "migrate").returncode == 0
    added = run_cli(
        stack_settings,
        "silences", "add", "--matcher", "post=KBRI-DOHA", "--matcher", "severity=medium,low",
        "--until", "2h", "--reason", "duty phone replaced", "--author", "ops-7",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[0]
    assert silence_id.startswith("sil_") and "posts=KBRI-DOHA" in added.stdout
    listed = run_cli(stack_settings, "silences", "list")
    assert silence_id in listed.stdout and "by ops-7" in listed.stdout and "active" in listed.stdout
    bad = run_cli(
        stack_settings,
        "silences",
        "add",
        "--matcher",
        "colour=red",
        "--until",
        "1h",
        "--reason",
        "x",
    )
    assert bad.returncode == 2 and "unknown matcher 'colour'" in bad.stderr
    expired = run_cli(stack_settings, "silences", "expire", silence_id, "--author", "ops-8")
    assert expired.returncode == 0 and "expired" in expired.stdout
    again = run_cli(stack_settings, "silences", "expire", silence_id)
    assert again.returncode == 1
    assert "no active silences" in run_cli(stack_settings, "silences", "list").stdout
    audit = await db_fetch(
        stack_settings.database_url, "SELECT token_id, detail FROM audit_log ORDER BY seq"
    )
    assert [a["token_id"] for a in audit] == ["cli:ops-7", "cli:ops-8"]
    deliveries = run_cli(stack_settings, "hooks", "deliveries")
    assert deliveries.returncode == 0 and "no deliveries" in deliveries.stdout
