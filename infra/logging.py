"""Structured logging: structlog, JSON in production, console locally.

Personal identifiers never reach a log line raw: the ``mask_pii`` processor masks the values
of known identifier keys wherever they appear (also nested), e.g. NIK ``3201********0001``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import stamina
import structlog

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


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Configure structlog and route stdlib logging (Faust, aiokafka) through it."""
    lvl = getattr(logging, level.upper())
    # stamina would log every scheduled retry with the exception's repr; Garda's retry loops
    # log their own line instead (what is unreachable, where, the attempt), so turn it off.
    stamina.instrumentation.set_on_retry_hooks([])
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_pii,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared[:-1], structlog.stdlib.ExtraAdder(), mask_pii],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # Faust and Kafka clients are chatty at INFO; keep their warnings.
    for noisy in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))


def _identity(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str = "garda") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
