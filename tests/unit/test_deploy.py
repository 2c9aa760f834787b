"""The deployment files ship no default secret and publish nothing beyond the host."""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "deploy" / "compose.yaml"
TEXT = COMPOSE.read_text("utf-8")
# the YAML without its comments
BODY = "\n".join(
    line.split(" #", 1)[0] for line in TEXT.splitlines() if not line.lstrip().startswith("#")
)


def test_compose_ships_no_default_database_password() -> None:
    assert "change-me" not in TEXT
    uses = re.findall(r"\$\{GARDA_DB_PASSWORD([^}]*)\}", BODY)
    assert len(uses) == 2  # the server's password and the workers' URL
    # ":?" makes compose stop with this message when the variable is unset or empty.
    assert all(u.startswith(":?") and "GARDA_DB_PASSWORD" in u for u in uses), uses
    assert "POSTGRES_PASSWORD:" in BODY


def test_compose_publishes_ports_on_the_loopback_only() -> None:
    mappings = [
        m
        for block in re.findall(r"ports:\s*\[([^\]]*)\]", BODY)
        for m in re.findall(r'"([^"]+)"', block)
    ]
    assert mappings, "the workers' ports are published"
    assert all(m.startswith("127.0.0.1:") for m in mappings), mappings
    assert "ports:\n" not in BODY  # no block-style list that the check above would miss
