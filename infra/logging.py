"""Structured logging: structlog, JSON in production, console locally.

Personal identifiers never reach a log line raw: the ``mask_pii`` processor masks the values
of known identifier keys wherever they appear (also nested), e.g. NIK ``3201********0001``.

Exceptions never put input data in a log line either. The text of many exceptions quotes
the value that failed (a ``UnicodeEncodeError`` carries the whole string, asyncpg's
"invalid input for query argument $3: 'Siti Aminah dipukul…'" the first 40 characters,
a PostgreSQL data error the literal), and that value can be a case description. So:
- log ``error=safe_error(exc)``, never ``repr(exc)`` or ``str(exc)`` of a foreign exception:
  the type plus fields that never carry data (SQLSTATE, constraint, codec, position,
  errno), and the message only of Garda's own errors (written without personal data);
- the ``safe_exceptions`` processor renders every ``exc_info`` (``log.exception``, and
  Faust's or aiokafka's records) as the frames (file, line, function) and ``safe_error``
  of each exception in the chain, never their messages or locals.
"""

from __future__ import annotations

import json.encoder
import logging
import re
import sys
import time
import traceback
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import stamina
import structlog

from errors import GardaError

PII_KEYS = frozenset({"nik", "passport_no", "full_name", "name", "employer_name", "phone"})


def mask_value(value: Any) -> Any:
    """Keep a hint of the shape (first 2, last 2 characters) and hide the rest."""
    if not isinstance(value, str):
        return "***" if value is not None else None
    if len(value) <= 4:
        return "*" * len(value)
    return f"{value[:2]}{'*' * (len(value) - 4)}{value[-2:]}"


def _mask(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (mask_value(v) if k in PII_KEYS else _mask(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mask(v) for v in obj]
    return obj


def mask_document(obj: Any) -> tuple[Any, set[str]]:
    """A copy of a decoded JSON document with personal identifier values masked (at any
    depth), and the keys that were masked."""
    found: set[str] = set()

    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                if k in PII_KEYS and v is not None:
                    found.add(k)
                    out[k] = mask_value(v)
                else:
                    out[k] = walk(v)
            return out
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(obj), found


_PII_TEXT = re.compile(
    r'"(' + "|".join(sorted(PII_KEYS)) + r')"(\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]+)'
)


def mask_json_text(text: str) -> tuple[str, set[str]]:
    """Mask ``"key": value`` pairs of personal identifiers in text that is not valid JSON
    (truncated, nested too deeply): the value keeps the shape hint of ``mask_value``."""
    found: set[str] = set()

    def repl(m: re.Match[str]) -> str:
        found.add(m.group(1))
        raw = m.group(3)
        inner = raw[1:-1] if raw.startswith('"') and raw.endswith('"') and len(raw) > 1 else raw
        return f'"{m.group(1)}"{m.group(2)}"{mask_value(inner)}"'

    return _PII_TEXT.sub(repl, text), found


def mask_pii(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask identifier values under PII_KEYS at any depth."""
    for key in list(event_dict):
        value = event_dict[key]
        if key in PII_KEYS:
            event_dict[key] = mask_value(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _mask(value)
    return event_dict


_QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')
_QUERY_ARGUMENT = re.compile(
    r"^invalid input for query argument \$\d+(?: in element #\d+ of executemany\(\) sequence)?"
)


def safe_error(exc: BaseException) -> str:
    """``exc`` described without any of the data that caused it (see the module doc)."""
    name = type(exc).__name__
    if isinstance(exc, GardaError):
        return f"{name}: {exc}"
    if isinstance(exc, UnicodeError):
        codec = getattr(exc, "encoding", None)
        start, end = getattr(exc, "start", None), getattr(exc, "end", None)
        reason = getattr(exc, "reason", None)
        where = f" at position {start}" if start is not None else ""
        if start is not None and end is not None and end - start > 1:
            where += f"-{end - 1}"
        return f"{name}: {codec or 'codec'}{where}: {reason or 'invalid text'}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):  # a PostgreSQL error (asyncpg.PostgresError)
        parts = [f"SQLSTATE {sqlstate}"]
        for attr in ("constraint_name", "table_name", "column_name", "data_type_name"):
            value = getattr(exc, attr, None)
            if value:
                parts.append(f"{attr.removesuffix('_name')} {value}")
        message = getattr(exc, "message", None) or ""
        if sqlstate.startswith(("22", "23")):  # data errors quote the input: not the quotes
            message = _QUOTED.sub('"…"', message)
        if message:
            parts.append(message)
        return f"{name} ({', '.join(parts)})"
    m = _QUERY_ARGUMENT.match(str(exc)) if isinstance(exc, ValueError) else None
    if m:  # asyncpg's client-side DataError: the argument's repr follows, then the cause
        cause = exc.__cause__
        return f"{name}: {m.group(0)}" + (f" ({safe_error(cause)})" if cause else "")
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{name}: [Errno {exc.errno}] {exc.strerror}"
    if isinstance(exc, TimeoutError | ConnectionError | NotImplementedError):
        return name
    return f"{name} (message withheld: it may quote input data)"


def safe_traceback(exc: BaseException) -> str:
    """The frames of ``exc`` and its causes, each exception as ``safe_error`` shows it."""
    lines: list[str] = []
    seen: set[int] = set()
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    for i, e in enumerate(reversed(chain)):
        if i:
            lines.append("The above exception led to the following one:")
        lines.append("Traceback (most recent call last):")
        for f in traceback.extract_tb(e.__traceback__):
            lines.append(f'  File "{f.filename}", line {f.lineno}, in {f.name}')
        lines.append(safe_error(e))
    return "\n".join(lines)


def _render_exc_info(exc_info: Any, event_dict: MutableMapping[str, Any]) -> None:
    """``exc_info`` (True, an exception or a ``sys.exc_info()`` tuple) as ``exception`` =
    ``safe_traceback``."""
    if not exc_info:
        return
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
    if isinstance(exc, BaseException):
        event_dict["exception"] = safe_traceback(exc)


def safe_exceptions(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``exc_info`` becomes ``exception`` = ``safe_traceback``."""
    exc_info = event_dict.pop("exc_info", None)
    _render_exc_info(exc_info, event_dict)
    for key, value in list(event_dict.items()):
        if isinstance(value, BaseException):  # error=exc passed as is
            event_dict[key] = safe_error(value)
    return event_dict


class _LineWriter:
    """structlog's final logger for Garda's own loggers: one rendered line per call, written
    to the stdlib handler's stream under the handler's lock (Faust's and aiokafka's records,
    from other threads, go through the same handler: lines never interleave)."""

    def __init__(self, handler: logging.StreamHandler[Any], name: str) -> None:
        self._handler = handler
        self.name = name  # read by structlog.stdlib.add_logger_name

    def msg(self, message: str) -> None:
        h = self._handler
        h.acquire()
        try:
            h.stream.write(message + "\n")
            h.stream.flush()
        except (OSError, ValueError):
            # As logging.Handler.handleError does: a line that cannot be written (a closed or
            # broken stream) must never break the code that logged it.
            pass
        finally:
            h.release()

    log = debug = info = warn = warning = msg
    err = error = critical = exception = fatal = failure = msg


_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # structlog's map_method_name


def add_level_logger_time(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor for Garda's own loggers: ``level``, ``logger`` and ``timestamp``
    in one call, exactly as ``add_log_level``, ``add_logger_name`` and
    ``TimeStamper(fmt="iso", utc=True)`` add them (the same keys, order and text)."""
    event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
    event_dict["logger"] = logger.name
    event_dict["timestamp"] = _iso_now()
    return event_dict


_second: list[Any] = [None, ""]  # the last whole second seen and its ISO text


def _iso_now() -> str:
    """``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00`` (no fraction when the
    microseconds are 0, as isoformat writes it); the date and time of day are formatted once
    per second."""
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    if sec != _second[0]:
        _second[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = sec
    return f"{_second[1]}.{us:06d}Z" if us else f"{_second[1]}Z"


def scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``mask_pii`` then ``safe_exceptions`` in one pass over the keys (the same result)."""
    exc_info = event_dict.pop("exc_info", None)
    for key, value in event_dict.items():
        if key in PII_KEYS:
            event_dict[key] = mask_value(value)
        elif type(value) is str or value is None:
            continue
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _mask(value)
        elif isinstance(value, BaseException):
            event_dict[key] = safe_error(value)
    if exc_info:
        _render_exc_info(exc_info, event_dict)
    return event_dict


def _json_fallback(obj: Any) -> Any:
    return structlog.processors._json_fallback_handler(obj)  # what JSONRenderer does


# What ``json.dumps(event_dict, default=...)`` (structlog's JSONRenderer) builds per call, once:
# the C encoder with json's default separators, ASCII escaping and NaN handling. The same
# bytes, without a ``JSONEncoder`` constructed for every line.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_json = (
    _c_make_encoder(
        None, _json_fallback, json.encoder.encode_basestring_ascii, None, ": ", ", ", 0, 0, 1
    )
    if _c_make_encoder is not None
    else None
)


def render_json(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    """structlog processor: the line as ``structlog.processors.JSONRenderer()`` renders it."""
    if _encode_json is None:  # pragma: no cover - CPython always has the C encoder
        return json.dumps(event_dict, default=_json_fallback)
    try:
        return "".join(_encode_json(event_dict, 0))
    except (ValueError, RecursionError):  # a circular value: json.dumps's own error text
        return json.dumps(event_dict, default=_json_fallback)


_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
# Where ``write_lines`` writes, once ``configure_logging("json", ...)`` has run: the handler,
# the lowest level written, and the processors the native loggers were configured with (if
# structlog is configured again, e.g. reset by a test, it logs through structlog instead).
_lines_to: tuple[logging.StreamHandler[Any], int, list[Any]] | None = None


def write_lines(logger: str, lines: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
    """Log ``(level, event, fields)`` lines of the logger named ``logger``: the same text as
    ``get_logger(logger).<level>(event, **fields)`` gives, line by line (level, logger and
    timestamp, ``scrub``'s masking, ``render_json``), written with one write and one flush
    for all of them under the handler's lock. A processor logs a line per event after each
    batch; structlog's per-call dispatch and a flush per line were most of their cost.

    Without JSON lines configured (console format, or structlog configured otherwise), each
    line goes through ``get_logger(logger)`` as usual."""
    sink = _lines_to
    if sink is None or structlog.get_config()["processors"] is not sink[2]:
        log = get_logger(logger)
        for level, event, fields in lines:
            getattr(log, level)(event, **fields)
        return
    handler, lowest, _ = sink
    out: list[str] = []
    for level, event, fields in lines:
        if _LEVEL_NUMBERS[level] < lowest:
            continue
        event_dict: dict[str, Any] = {**fields, "event": event}
        event_dict["level"] = _LEVEL_NAMES.get(level, level)
        event_dict["logger"] = logger
        event_dict["timestamp"] = _iso_now()
        out.append(render_json(None, level, scrub(None, level, event_dict)))
    if out:
        _LineWriter(handler, logger).msg("\n".join(out))


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Configure structlog and route stdlib logging (Faust, aiokafka) through it.

    Garda's own loggers (``get_logger``) are structlog's native filtering bound loggers: a
    call below the level returns at once, and a line is rendered by the processor chain and
    written directly, without a stdlib ``LogRecord`` and formatter. Stdlib records (Faust,
    aiokafka, mode) keep their logger names and levels and are rendered by the same
    processors (``ProcessorFormatter``), so every line has the same shape and masking.

    A native line is one log call per event on the hot path, so its chain is short: the
    level, logger and timestamp in one processor (the date formatted once a second), masking
    and exception rendering in one pass over the keys (``scrub``), and json's C encoder
    built once (``render_json``): the same text as structlog's processors and JSONRenderer
    give. Garda binds no context variables, so ``merge_contextvars`` (a copy of the whole
    context per line) is not in the chains.
    """
    lvl = getattr(logging, level.upper())
    # stamina would log every scheduled retry with the exception's repr; Garda's retry loops
    # log their own line instead (what is unreachable, where, the attempt), so turn it off.
    stamina.instrumentation.set_on_retry_hooks([])
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_pii,
    ]
    renderer: Any = (
        render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # Garda's own lines (one per event): the three stamps in one call, then the same masking,
    # exception rendering and JSON text as the stdlib records get.
    native: list[Any] = [add_level_logger_time, scrub, renderer]
    handler = logging.StreamHandler(sys.stderr)

    def writer(*args: Any) -> _LineWriter:
        return _LineWriter(handler, str(args[0]) if args else "garda")

    global _lines_to
    _lines_to = (handler, lvl, native) if fmt == "json" else None
    structlog.configure(
        processors=native,
        logger_factory=writer,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared[:-1], structlog.stdlib.ExtraAdder(), mask_pii],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            safe_exceptions,
            renderer,
        ],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # Faust and Kafka clients are chatty at INFO; keep their warnings.
    for noisy in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))


def get_logger(name: str = "garda") -> Any:
    """A Garda logger; its lines carry ``logger=name``. Lazy: a module-level logger follows
    a ``configure_logging`` called later."""
    return structlog.get_logger(name)
