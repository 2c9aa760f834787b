"""The shape of the policy file's tables, declared once (pydantic), with Garda's messages.

``handlers.policy`` and ``handlers.prevention_policy`` declare each table as a subclass of
:class:`PolicyTable`: its keys are the fields (those without a default are required), each
field's type says what its value must be (``Str``, ``Duration``, ``StrList``...). What
relates several values (a region owned by two posts, a level2 before its ack) stays plain
code in those modules.

:func:`parse` checks a table and turns pydantic's first problem into the ConfigError text
"<where>: <what>": where is the key's path in the file (``sla.high.ack``,
``non_procedural.moratorium[0].country``), what is one of the messages below, the same
words the loader has always used (``unknown key(s) region (allowed: ...)``, ``bad duration
'3 days' (use an integer and one of s, m, h, d: "90s", "7d")``...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from errors import ConfigError
from schemas.fields import COUNTRY_PATTERN
from schemas.types import CATEGORIES, SEVERITIES

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_COUNTRY = re.compile(COUNTRY_PATTERN)


def duration_or_problem(value: object) -> timedelta | str:
    """``value`` ("90s", "15m", "1h", "7d") as a positive timedelta, or what is wrong."""
    if not isinstance(value, str):
        return f'expected a duration string like "1h" or "7d", got {value!r}'
    m = _DURATION.match(value.strip())
    if not m:
        return f'bad duration {value!r} (use an integer and one of s, m, h, d: "90s", "7d")'
    n = int(m.group(1))
    if n <= 0:
        return f"duration {value!r} must be positive"
    return timedelta(**{_UNITS[m.group(2)]: n})


# -- values -------------------------------------------------------------------------------


def fail(message: str) -> PydanticCustomError:
    """The error a value check raises; ``message`` becomes the ConfigError's "what"."""
    return PydanticCustomError("policy", "{message}", {"message": message})


def _a_table(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(f"expected a table, got {type(value).__name__}")
    return value


def _a_string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise fail(f"expected a non-empty string, got {value!r}")
    return value


def one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    """A check: a non-empty string among ``choices``."""

    def check(value: object) -> str:
        text = _a_string(value)
        if text not in choices:
            raise fail(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return check


def a_list(value: object) -> object:
    """A check: a list (its items are checked on their own)."""
    if not isinstance(value, list):
        raise fail(f"expected a list of strings, got {value!r}")
    return value


def once_each(values: list[str]) -> list[str]:
    """A check: no string listed twice."""
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise fail(f"listed twice: {', '.join(dupes)}")
    return values


def _a_duration(value: object) -> timedelta:
    got = duration_or_problem(value)
    if isinstance(got, str):
        raise fail(got)
    return got


def _a_date(value: object) -> date:
    if isinstance(value, datetime):
        raise fail("expected a date (YYYY-MM-DD), got a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise fail(f"expected a date (YYYY-MM-DD), got {value!r}")


def _a_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(f"expected true or false, got {value!r}")
    return value


def _a_timezone(value: object) -> str:
    """An IANA time zone name the system's zone database knows."""
    if not isinstance(value, str) or not value:
        raise fail(f'expected an IANA time zone like "Asia/Jakarta", got {value!r}')
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"unknown time zone {value!r}") from None
    return value


def _a_country(value: object) -> str:
    country = _a_string(value)
    if not _COUNTRY.match(country):
        raise fail(f"expected an ISO 3166-1 alpha-2 code, got {country!r}")
    return country


def tables(what: str, *, nonempty: bool = False) -> Callable[[object], object]:
    """A check: a list (of tables, each checked by its own model); ``what`` if not."""

    def check(value: object) -> object:
        if not isinstance(value, list) or (nonempty and not value):
            raise fail(what)
        return value

    return check


def int_at_least(minimum: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(f"expected an integer >= {minimum}, got {value!r}")
        return value

    return check


Str = Annotated[str, BeforeValidator(_a_string)]
Duration = Annotated[timedelta, BeforeValidator(_a_duration)]
Date = Annotated[date, BeforeValidator(_a_date)]
Bool = Annotated[bool, BeforeValidator(_a_bool)]
Table = Annotated[dict[str, Any], BeforeValidator(_a_table)]
Timezone = Annotated[str, BeforeValidator(_a_timezone)]
Country = Annotated[str, BeforeValidator(_a_country)]
Severity = Annotated[str, BeforeValidator(one_of(SEVERITIES))]
StrList = Annotated[list[Str], BeforeValidator(a_list), AfterValidator(once_each)]
# A list of strings of a vocabulary, none twice, each checked in its place (``x[1]``):
# ``Annotated[list[Annotated[str, BeforeValidator(one_of(VOCABULARY))]], *WORDS]``.
WORDS = (BeforeValidator(a_list), AfterValidator(once_each))
Categories = Annotated[list[Annotated[str, BeforeValidator(one_of(CATEGORIES))]], *WORDS]


# -- tables -------------------------------------------------------------------------------


class PolicyTable(BaseModel):
    """A table of the policy file: its keys are the fields, those without a default are
    required; unknown or missing keys are one error that names them all."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        table = _a_table(value)
        fields = cls.model_fields
        unknown = sorted(set(table) - set(fields))
        if unknown:
            allowed = ", ".join(sorted(fields))
            raise fail(f"unknown key(s) {', '.join(unknown)} (allowed: {allowed})")
        missing = [k for k, f in fields.items() if f.is_required() and k not in table]
        if missing:
            raise fail(f"missing required key(s) {', '.join(missing)}")
        return table


class SlaTable(PolicyTable):
    """An SLA ladder: ``ack``, ``resolve`` and an optional ``level2``."""

    ack: Duration
    resolve: Duration
    level2: Duration | None = None


def set_keys(table: PolicyTable, *names: str) -> dict[str, Any]:
    """The keys of ``names`` the file sets (the dataclass defaults stand for the others)."""
    return {n: getattr(table, n) for n in names if getattr(table, n) is not None}


_M = TypeVar("_M", bound=BaseModel)
Loc = tuple[int | str, ...]


def path(loc: Loc) -> str:
    """``("high", "ack")`` -> ``.high.ack``; ``("units", 0)`` -> ``.units[0]``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def parse(
    model: type[_M], value: object, where: str, *, where_of: Callable[[Loc], str] | None = None
) -> _M:
    """``value`` checked against ``model``; its first problem as ConfigError "where: what".

    ``where_of`` names the place of a problem from its location in ``value`` (default:
    ``where`` followed by the path, ``sla.high.ack``)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc: Loc = tuple(first["loc"])
        place = where_of(loc) if where_of is not None else where + path(loc)
        raise ConfigError(f"{place}: {first['msg']}") from None
