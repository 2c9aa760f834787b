from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog

import infra.logging
from errors import InvalidEvent
from infra.logging import (
    add_level_logger_time,
    configure_logging,
    get_logger,
    mask_pii,
    mask_value,
    render_json,
    safe_error,
    safe_exceptions,
    scrub,
    write_lines,
)


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


# --- exceptions never carry input data into a log line ----------------------------------

DESCRIPTION = "Siti Aminah dipukul majikan di Johor, paspor ditahan"


def _encode_error() -> UnicodeEncodeError:
    text = DESCRIPTION + "\udfff"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc
    raise AssertionError("unreachable")


def _client_data_error() -> Exception:
    # What asyncpg raises when it cannot encode a query argument (prepared_stmt.pyx).
    cause = _encode_error()
    exc = asyncpg.exceptions._base.DataError(
        f"invalid input for query argument $3: {DESCRIPTION[:40]!r}... ({cause})"
    )
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        (_encode_error(), "UnicodeEncodeError: utf-8 at position 52: surrogates not allowed"),
        (
            _client_data_error(),
            "DataError: invalid input for query argument $3 (UnicodeEncodeError",
        ),
        (
            asyncpg.exceptions.PostgresError.new(
                {"M": f'invalid input syntax for type timestamp: "{DESCRIPTION}"', "C": "22007"}
            ),
            'InvalidDatetimeFormatError (SQLSTATE 22007, invalid input syntax for type timestamp: "…")',
        ),
        (ValueError(DESCRIPTION), "ValueError (message withheld"),
        (KeyError(DESCRIPTION), "KeyError (message withheld"),
        (InvalidEvent("data.nik: expected a string"), "InvalidEvent: data.nik: expected a string"),
    ],
)
def test_safe_error_keeps_the_kind_and_drops_the_data(exc: BaseException, shown: str) -> None:
    text = safe_error(exc)
    assert text.startswith(shown)
    assert "Siti" not in text and "majikan" not in text
    assert "Siti" in repr(exc) or isinstance(exc, InvalidEvent)  # what used to be logged


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logged_exceptions_never_show_their_message(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(fmt, "info")
    try:
        try:
            raise _client_data_error()
        except Exception as exc:
            get_logger("garda.test").exception("record failed", error=exc)
            logging.getLogger("aiokafka.test").exception("foreign failure")
        text = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert "Siti" not in text and "majikan" not in text
    assert text.count("DataError: invalid input for query argument $3") >= 3  # error + 2 tracebacks
    assert "test_logged_exceptions_never_show_their_message" in text  # the frames are kept
    if fmt == "json":
        lines = [json.loads(x) for x in text.strip().splitlines()]
        assert [line["event"] for line in lines] == ["record failed", "foreign failure"]
        assert all("Traceback" in line["exception"] for line in lines)


def test_dead_letter_reason_of_a_failed_record_holds_no_data() -> None:
    from streams.processor import _failure_reason

    for exc in (_encode_error(), _client_data_error(), RuntimeError(DESCRIPTION)):
        reason = _failure_reason(exc)
        assert "Siti" not in reason, reason
        assert type(exc).__name__ in reason


def test_a_closed_log_stream_never_breaks_the_caller() -> None:
    import io
    import logging as std

    from infra.logging import _LineWriter

    stream = io.StringIO()
    handler = std.StreamHandler(stream)
    writer = _LineWriter(handler, "garda.test")
    writer.info("before")
    stream.close()
    writer.info("after the stream closed")  # must not raise


class _Named:
    name = "garda.test"


class _Custom:
    def __structlog__(self) -> dict[str, int]:
        return {"s": 1}


def test_the_native_chain_renders_what_structlogs_processors_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Garda's per-line processors (stamps in one call, masking and exceptions in one pass,
    the C JSON encoder built once) write the same text as structlog's own processors and
    JSONRenderer, the chain before them, for every kind of value a line can carry."""
    try:
        raise ValueError(DESCRIPTION)
    except ValueError as exc:
        failed = exc
    stamp = "2026-12-01T23:58:56.668407Z"  # TimeStamper's text is tested below
    monkeypatch.setattr(infra.logging, "_iso_now", lambda: stamp)

    def timestamper(_: Any, __: str, ed: dict[str, Any]) -> dict[str, Any]:
        return {**ed, "timestamp": stamp}

    old = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
        mask_pii,
        safe_exceptions,
        structlog.processors.JSONRenderer(),
    ]
    new = [add_level_logger_time, scrub, render_json]
    events: list[dict[str, Any]] = [
        {"event_id": "E1", "type": "pmi.x", "worker_id": "PMI-1", "outcome": "applied"},
        {"nik": "3201010101010001", "data": {"full_name": "Siti Aminah"}, "items": [("a", 1)]},
        {"error": failed, "exc_info": failed, "passport_no": failed, "n": 10**30, "f": 1.5},
        {"exc_info": (type(failed), failed, failed.__traceback__), "x": float("nan")},
        {
            "text": "é \x7f \x00 \u2028 😀",
            "ok": True,
            "none": None,
            "obj": _Custom(),
            "r": _Named(),
        },
        {3: "int key", None: 1, 2.5: "float key", "empty": {}, "t": ()},
    ]
    for method in ("info", "warning", "warn", "exception", "error"):
        for event in events:
            rendered = []
            for chain in (old, new):
                ed: Any = {**event, "event": "event handled"}
                for proc in chain:
                    ed = proc(_Named(), method, ed)
                rendered.append(ed)
            assert rendered[0] == rendered[1]
            assert DESCRIPTION not in rendered[1] and "3201010101010001" not in rendered[1]


def test_the_timestamp_is_isoformat_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = add_level_logger_time(_Named(), "info", {})["timestamp"]
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert stamp.endswith("Z") and parsed.utcoffset() == timedelta(0)
    assert parsed.isoformat().replace("+00:00", "Z") == stamp
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5
    for ns in (1_796_169_600_000_000_000, 1_796_169_600_000_001_999, 1_796_169_601_999_999_000):
        monkeypatch.setattr(infra.logging.time, "time_ns", lambda ns=ns: ns)
        when = datetime.fromtimestamp(ns // 1000 / 1e6, UTC).replace(microsecond=ns // 1000 % 10**6)
        assert infra.logging._iso_now() == when.isoformat().replace("+00:00", "Z")


def test_lines_written_together_are_the_lines_logged_one_by_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_lines`` (a batch's lines, one write) gives the text the logger gives line by
    line: the same keys in the same order, masking, levels below the configured one left
    out; once structlog is configured otherwise it logs through structlog."""
    monkeypatch.setattr(infra.logging, "_iso_now", lambda: "2026-12-01T23:58:56.668407Z")
    lines: list[tuple[str, str, dict[str, Any]]] = [
        ("info", "event handled", {"event_id": "E1", "type": "pmi.x", "worker_id": "PMI-1"}),
        ("debug", "not at info", {"x": 1}),
        ("warning", "event handled", {"outcome": "rejected", "reason": "é \u2028 😀"}),
        ("error", "odd", {"nik": "3201010101010001", "data": {"full_name": "Siti"}, "n": None}),
    ]
    configure_logging("json", "info")
    try:
        log = get_logger("garda.processor")
        for level, event, fields in lines:
            getattr(log, level)(event, **fields)
        one_by_one = capsys.readouterr().err
        write_lines("garda.processor", lines)
        together = capsys.readouterr().err
        structlog.reset_defaults()
        write_lines("garda.processor", lines[:1])  # structlog's default: printed to stdout
        after_reset = capsys.readouterr()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert together == one_by_one
    assert len(together.splitlines()) == 3 and "3201010101010001" not in together
    assert "Siti" not in together and "not at info" not in together
    assert after_reset.err == "" and "event handled" in after_reset.out
