"""The worker's journey (design §5 "Worker state"): the pmi.departures.v1 events. Pure, no I/O.

States: ``departed`` -> ``placed`` (arrival) -> ``returned``; also ``failed_departure``,
``deceased`` (a return with reason ``deceased``) and ``unregistered_abroad`` (first seen
through an incident or a claim, set elsewhere).

=========================  =====================================================================
event                      effect
=========================  =====================================================================
departure.recorded         -> ``departed``; stores country/region (destination), departed_at,
                           contract dates, scheme, employer_type, sector, has_social_security
                           (``bpjs_membership_no`` present). A departure after a return, a
                           failed departure or an earlier departure starts a new journey
                           (arrival/return facts of the old one are cleared).
departure.failed           -> ``failed_departure``.
arrival.reported           -> ``placed``; country/region updated.
contract.extended          ``contract_end`` moves (no state change).
return.recorded            -> ``returned`` (``deceased`` when reason is ``deceased``); returned_at.
=========================  =====================================================================

Rules decided where the design is silent:

- **Time order.** Each state change carries a business time (``departed_at``, ``at`` of a
  failure (else the event time), ``reported_at``, ``returned_at``), kept in
  ``worker.state_at``. An event whose business time is *earlier* than ``state_at`` does not
  move the state back: it only fills facts the worker lacks (a late departure record fills
  the departure facts of a worker first seen through an arrival; a late arrival fills
  ``arrived_at``), and the outcome is ``stale``. An equal time is a correction of the same
  step and is applied. ``unregistered_abroad`` has no ``state_at``, so any journey record
  supersedes it.
- **Irregular but plausible** transitions are applied and flagged in ``worker.anomalies``
  (no timeline row: journeys are not cases):
  ``arrival_without_departure`` (arrival for a worker never departed, first seen abroad, or
  back home after a return/failed departure: a new journey with no departure record; its
  departure facts are cleared), ``departure_without_return`` (a new departure while the
  previous journey is still open), ``return_without_departure`` (a return for a worker with
  no journey in progress: never seen, failed departure, or returned already).
  A worker record created by a journey event gets ``first_seen_via`` = the event type.
- **Contradictions** raise ``Rejected`` (-> dead-letter, with the reason): ``Conflict`` for
  any journey event at or after a recorded death; a failed departure for a worker who
  is abroad (``placed``/``unregistered_abroad``); a contract extension whose journey ended
  (returned/failed/deceased), ``NotFound`` for one with no journey on record, unless the
  extension is older than the end (then it is applied as a stale fact).
  Re-sending the same return of a deceased worker is a no-op (``unchanged``).
- Contract dates ("YYYY-MM-DD") are stored as midnight UTC of that date. A contract
  extension may also move ``contract_end`` earlier (a correction).
- ``departed_at`` keeps the recorded departure time after a failed departure.
- Personal identifiers (``nik``, ``passport_no``, ``full_name``) are never stored: only the
  fields listed above are copied from the event.

Issue-4 call sites: ``AFTER_DEPARTURE`` hooks run after every accepted
``pmi.departure.recorded`` (stale ones included: the non-procedural checks judge the record
itself); ``AFTER_JOURNEY_CHANGE`` hooks run after every accepted journey event (coverage).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from errors import Conflict, NotFound, Unacceptable
from handlers import agencies, coverage, employers, nonprocedural, reintegration
from handlers.context import Ctx
from handlers.model import Aggregate, Worker, parse_dt
from handlers.routing import normalize_country, normalize_region

Hook = Callable[[Aggregate, Ctx], object]

# Checks that follow a departure plug in here, one line each.
AFTER_DEPARTURE: list[Hook] = [nonprocedural.check_departure, reintegration.remember_origin]
# e.g. ``coverage.update_coverage``: departed_at/contract_end/returned_at may have changed.
AFTER_JOURNEY_CHANGE: list[Hook] = [
    coverage.update_coverage,
    coverage.recheck_gaps,
    reintegration.after_journey_change,  # a return may open a reintegration case
    employers.record_employer,  # a departure/arrival names the employer (watchlist)
    agencies.record_agency,  # a departure names the placement agency (scorecard)
]

ABROAD = ("departed", "placed")
ARRIVAL_WITHOUT_DEPARTURE = "arrival_without_departure"
DEPARTURE_WITHOUT_RETURN = "departure_without_return"
RETURN_WITHOUT_DEPARTURE = "return_without_departure"


# --- value helpers ----------------------------------------------------------------------


def to_datetime(value: Any) -> datetime | None:
    """An RFC 3339 string, a "YYYY-MM-DD" date (midnight UTC), a date or a datetime -> UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if type(value) is str:
        dt = _DATETIMES.get(value)
        if dt is None:
            dt = _text_datetime(value)
            if len(_DATETIMES) >= _DATETIMES_MAX:
                _DATETIMES.clear()
            _DATETIMES[value] = dt
        return dt
    if isinstance(value, str):
        return _text_datetime(value)
    raise Unacceptable(f"not a date or date-time: {value!r}")


def _text_datetime(value: str) -> datetime:
    text = value.strip()
    if len(text) == 10:
        d = date.fromisoformat(text)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    return parse_dt(text)


# Texts ``to_datetime`` read -> their value (journeys repeat their dates: contract dates,
# the departure time read by the journey and its hooks); a text that does not parse raises
# again. Bounded: cleared when full.
_DATETIMES: dict[str, datetime] = {}
_DATETIMES_MAX = 4096


def _present(value: Any) -> bool:
    return value is not None and (not isinstance(value, str) or value.strip() != "")


def _time(data: dict[str, Any], key: str) -> datetime | None:
    try:
        return to_datetime(data.get(key))
    except (ValueError, Unacceptable) as exc:
        raise Unacceptable(f"{key}: {exc}") from exc


def _required_time(data: dict[str, Any], key: str) -> datetime:
    value = _time(data, key)
    if value is None:
        raise Unacceptable(f"{key} is required")
    return value


def _stale(w: Worker, at: datetime) -> bool:
    return w.state_at is not None and at < w.state_at


def _flag(w: Worker, anomaly: str) -> None:
    if anomaly not in w.anomalies:
        w.anomalies.append(anomaly)


def _first_seen(w: Worker, ctx: Ctx) -> None:
    if w.state is None and w.first_seen_via is None:
        w.first_seen_via = ctx.envelope.type


def _refuse_after_death(w: Worker, ctx: Ctx, at: datetime) -> None:
    if w.state == "deceased" and not _stale(w, at):
        raise Conflict(f"worker {w.worker_id} is recorded deceased; {ctx.envelope.type} refused")


def _set_state(w: Worker, state: str, at: datetime) -> None:
    w.state = state
    w.state_at = at


def _after(hooks: list[Hook], agg: Aggregate, ctx: Ctx) -> None:
    for hook in hooks:
        hook(agg, ctx)


def _end_journey_facts(w: Worker) -> None:
    w.arrived_at = None
    w.returned_at = None
    w.return_reason = None


# --- handlers ---------------------------------------------------------------------------


def _store_departure(w: Worker, data: dict[str, Any], at: datetime) -> None:
    w.departed_at = at
    w.contract_start = _time(data, "contract_start")
    w.contract_end = _time(data, "contract_end")
    w.scheme = data.get("scheme")
    w.employer_type = data.get("employer_type")
    w.sector = data.get("sector")
    w.has_social_security = _present(data.get("bpjs_membership_no"))


def departure_recorded(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    w = agg.worker
    at = _required_time(data, "departed_at")
    _refuse_after_death(w, ctx, at)
    _first_seen(w, ctx)
    if _stale(w, at):
        if w.departed_at is None:  # e.g. first seen through an arrival: fill the journey in
            _store_departure(w, data, at)
        ctx.outcome = "stale"
    else:
        if w.departed_at != at:  # not a correction of the same departure: a new journey
            if w.state in ABROAD:
                _flag(w, DEPARTURE_WITHOUT_RETURN)
            _end_journey_facts(w)
        country = normalize_country(data["destination_country"])
        w.country = country
        w.region = normalize_region(country, data.get("destination_region"))
        _store_departure(w, data, at)
        _set_state(w, "departed", at)
        ctx.outcome = "departed"
    _after(AFTER_DEPARTURE, agg, ctx)
    _after(AFTER_JOURNEY_CHANGE, agg, ctx)


def departure_failed(agg: Aggregate, ctx: Ctx) -> None:
    w = agg.worker
    at = _time(ctx.envelope.data, "at") or ctx.event_time
    _refuse_after_death(w, ctx, at)
    if _stale(w, at):
        ctx.outcome = "stale"
        return
    if w.state in ("placed", "unregistered_abroad"):
        raise Conflict(
            f"worker {w.worker_id} is abroad ({w.state}); a failed departure contradicts it"
        )
    _first_seen(w, ctx)
    _set_state(w, "failed_departure", at)
    ctx.outcome = "failed"
    _after(AFTER_JOURNEY_CHANGE, agg, ctx)


def arrival_reported(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    w = agg.worker
    at = _required_time(data, "reported_at")
    _refuse_after_death(w, ctx, at)
    _first_seen(w, ctx)
    if _stale(w, at):
        if w.arrived_at is None and w.departed_at is not None and at >= w.departed_at:
            w.arrived_at = at
        ctx.outcome = "stale"
        _after(AFTER_JOURNEY_CHANGE, agg, ctx)
        return
    if w.state not in ABROAD:
        _flag(w, ARRIVAL_WITHOUT_DEPARTURE)
        if w.state in ("returned", "failed_departure"):  # a new journey with no departure record
            _end_journey_facts(w)
            w.departed_at = w.contract_start = w.contract_end = None
    country = normalize_country(data["country"])
    region = normalize_region(country, data.get("region"))
    if region is None and country == w.country:
        region = w.region  # same country, no region given: keep what we knew
    w.country, w.region = country, region
    if w.state != "placed" or w.arrived_at is None:
        w.arrived_at = at
    _set_state(w, "placed", at)
    ctx.outcome = "placed"
    _after(AFTER_JOURNEY_CHANGE, agg, ctx)


def contract_extended(agg: Aggregate, ctx: Ctx) -> None:
    w = agg.worker
    end = _required_time(ctx.envelope.data, "contract_end")
    if w.state is None:
        raise NotFound(f"worker {w.worker_id} has no journey on record to extend")
    if w.state in (*ABROAD, "unregistered_abroad"):
        ctx.outcome = "extended"
    elif _stale(w, ctx.event_time):
        ctx.outcome = "stale"  # sent before the journey ended: keep the fact
    else:
        raise Conflict(
            f"worker {w.worker_id} is {w.state}; a contract extension needs a placement in progress"
        )
    w.contract_end = end
    _after(AFTER_JOURNEY_CHANGE, agg, ctx)


def return_recorded(agg: Aggregate, ctx: Ctx) -> None:
    data = ctx.envelope.data
    w = agg.worker
    at = _required_time(data, "returned_at")
    reason = data["reason"]
    if w.state == "deceased" and reason == "deceased" and w.returned_at == at:
        ctx.outcome = "unchanged"
        return
    _refuse_after_death(w, ctx, at)
    _first_seen(w, ctx)
    if _stale(w, at):
        ctx.outcome = "stale"
        return
    same_return = w.state == "returned" and w.returned_at == at
    if w.state not in (*ABROAD, "unregistered_abroad") and not same_return:
        _flag(w, RETURN_WITHOUT_DEPARTURE)
    w.returned_at = at
    w.return_reason = reason
    state = "deceased" if reason == "deceased" else "returned"
    _set_state(w, state, at)
    ctx.outcome = state
    _after(AFTER_JOURNEY_CHANGE, agg, ctx)


JOURNEY_HANDLERS: dict[str, Callable[[Aggregate, Ctx], None]] = {
    "pmi.departure.recorded": departure_recorded,
    "pmi.departure.failed": departure_failed,
    "pmi.arrival.reported": arrival_reported,
    "pmi.contract.extended": contract_extended,
    "pmi.return.recorded": return_recorded,
}
