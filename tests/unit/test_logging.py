from __future__ import annotations

import json
import logging

import pytest
import structlog

from infra.logging import configure_logging, get_logger, mask_pii, mask_value


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("3201010101010001", "32************01"),
        ("C1234567", "C1****67"),
        ("Ani", "***"),
        (None, None),
    ],
)
def test_mask_value(raw: str | None, masked: str | None) -> None:
    assert mask_value(raw) == masked


def test_mask_pii_nested() -> None:
    event = {
        "event": "x",
        "nik": "3201010101010001",
        "data": {"full_name": "Siti Aminah", "passport_no": "C1234567", "worker_id": "PMI-1"},
        "items": [{"nik": "1234567890"}],
    }
    out = mask_pii(None, "info", dict(event))
    text = json.dumps(out)
    for raw in ("3201010101010001", "Siti Aminah", "C1234567", "1234567890"):
        assert raw not in text
    assert out["data"]["worker_id"] == "PMI-1"


def test_json_log_lines_mask_identifiers(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        get_logger("garda.test").info("event handled", worker_id="PMI-1", nik="3201010101010001")
        logging.getLogger("faust.test").warning("from faust", extra={"full_name": "Siti Aminah"})
        lines = [json.loads(x) for x in capsys.readouterr().err.strip().splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert lines[0]["event"] == "event handled" and lines[0]["worker_id"] == "PMI-1"
    assert lines[0]["nik"] == "32************01"
    assert lines[1]["event"] == "from faust" and "Siti Aminah" not in json.dumps(lines[1])
