"""``GET /api/openapi.json``: the OpenAPI 3.1 document of every route Garda serves.

The document is data written next to the views; the filters, actions and event types in it
come from the same constants the views use. A test checks that it names exactly the
registered routes and methods (``streams.web.routes()``) and that it is valid OpenAPI 3.1.

Rules decided where the design is silent:
- The document itself needs no token: it says what the API is, nothing about its data.
- Path parameters are named as in the contract (``{type}``), whatever the view calls them.
- The desk's HTML pages are listed too (tag ``desk``): every route is documented.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response

from handlers.model import CASE_KINDS, CASE_STATUSES, SEVERITIES
from infra.queries import CASE_FILTERS, ORDERS
from schemas.types import CATEGORIES, list_types
from streams.web.actions import ACTIONS
from streams.web.common import ApiView

OPENAPI_VERSION = "3.1.0"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
JSON = "application/json"

_ERROR = {"$ref": "#/components/schemas/Error"}
_ENUMS: dict[str, tuple[str, ...]] = {
    "severity": SEVERITIES,
    "status": CASE_STATUSES,
    "kind": CASE_KINDS,
    "category": CATEGORIES,
}
_FILTER_TEXT = {
    "post_id": "Cases of this post (assigned, or escalated to it).",
    "status": "Status; several separated by commas.",
    "severity": "Severity.",
    "worker_id": "Cases of this worker.",
    "kind": "Case kind.",
    "category": "Incident category.",
    "q": "Text search in the case id, worker id and description.",
}


def _json_response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (an unknown filter, a body that is not a JSON object).",
        401: "No valid bearer token.",
        403: "The token may not do this.",
        404: "Unknown, or not visible to this token.",
        409: "The case's state does not allow this action.",
        422: "The event or action breaks a rule.",
        503: "The database or the broker is unavailable; retry.",
    }
    return {str(c): _json_response(text[c], _ERROR) for c in codes}


def _path_param(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _read(summary: str, ok: str, *extra: int, **more: Any) -> dict[str, Any]:
    return {
        "tags": ["api"],
        "summary": summary,
        "security": BEARER,
        "responses": {
            "200": _json_response(ok, more.pop("schema", None)),
            **_errors(401, *extra, 503),
        },
        **more,
    }


def _case_filters() -> list[dict[str, Any]]:
    params = []
    for name in CASE_FILTERS:
        schema: dict[str, Any] = {"type": "string"}
        if name in _ENUMS and name != "status":
            schema["enum"] = list(_ENUMS[name])
        params.append(
            {
                "name": name,
                "in": "query",
                "description": _FILTER_TEXT.get(name, name),
                "schema": schema,
            }
        )
    params += [
        {
            "name": "limit",
            "in": "query",
            "description": "Page size (1 to 1000).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
        {
            "name": "after",
            "in": "query",
            "description": "The previous page's `next`.",
            "schema": {"type": "string"},
        },
        {
            "name": "order",
            "in": "query",
            "description": "Newest first, or most urgent first.",
            "schema": {"type": "string", "enum": list(ORDERS), "default": ORDERS[0]},
        },
    ]
    return params


def _page(summary: str) -> dict[str, Any]:
    return {
        "tags": ["desk"],
        "summary": summary,
        "responses": {
            "200": {
                "description": "An HTML page.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    }


def _operation_paths() -> dict[str, dict[str, Any]]:
    """Health, metrics and this document."""
    return {
        "/health": {
            "get": {
                "tags": ["operations"],
                "summary": "Broker, database and lag checks.",
                "responses": {
                    "200": _json_response("Healthy."),
                    "503": _json_response("A dependency is failing (named)."),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics (text format).",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "tags": ["api"],
                "summary": "This document.",
                "responses": {"200": _json_response("The OpenAPI document.")},
            }
        },
    }


def _read_paths() -> dict[str, dict[str, Any]]:
    """The read endpoints."""
    case_id = _path_param("case_id", "The case id.")
    return {
        "/api/workers/{worker_id}": {
            "get": _read(
                "A worker's state.",
                "The worker.",
                404,
                parameters=[_path_param("worker_id", "The worker (PMI) id.")],
                schema={"$ref": "#/components/schemas/Worker"},
            )
        },
        "/api/cases": {
            "get": _read(
                "Cases the token may see, filtered, paged.",
                "A page of cases (`next` when more).",
                400,
                parameters=_case_filters(),
            )
        },
        "/api/cases/{case_id}": {
            "get": _read(
                "A case with its timeline.",
                "The case.",
                404,
                parameters=[case_id],
                schema={"$ref": "#/components/schemas/Case"},
            )
        },
        "/api/posts": {"get": _read("The posts the token may see.", "The posts.")},
        "/api/agencies": {
            "get": _read(
                "The agency (P3MI) scorecard per licence (headquarters tokens only).",
                "The scorecards, worst rate first.",
                400,
                parameters=[
                    {
                        "name": "since",
                        "in": "query",
                        "description": "A date, an ISO time or a duration back from now (90d).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "license",
                        "in": "query",
                        "description": "One licence.",
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/api/employers": {
            "get": _read(
                "The employer watchlist (headquarters: with the cases behind each entry;"
                " a post: its countries only).",
                "The employers.",
                400,
                parameters=[
                    {
                        "name": "watchlisted",
                        "in": "query",
                        "description": "Only watchlisted (true) or not (false) employers.",
                        "schema": {"type": "string", "enum": ["true", "false"]},
                    },
                    {
                        "name": "country",
                        "in": "query",
                        "description": "ISO 3166-1 alpha-2 country.",
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/api/board": {
            "get": _read(
                "Per post: open, overdue, escalated, median time to acknowledge, opened per day.",
                "The board.",
            )
        },
        "/api/schemas": {"get": _read("The event types with a JSON Schema.", "The types.")},
        "/api/schemas/{type}": {
            "get": _read(
                "The JSON Schema of an event type's data.",
                "The schema.",
                404,
                parameters=[_path_param("type", "The event type.", list_types())],
            )
        },
    }


def _write_paths() -> dict[str, dict[str, Any]]:
    """The write endpoints and the live stream."""
    case_id = _path_param("case_id", "The case id.")
    action_body = {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/CaseAction"}}},
    }
    return {
        "/api/cases/{case_id}/{action}": {
            "post": {
                "tags": ["api"],
                "summary": "Act on a case: checked, then published on pmi.case-actions.v1.",
                "security": BEARER,
                "parameters": [case_id, _path_param("action", "The action.", sorted(ACTIONS))],
                "requestBody": action_body,
                "responses": {
                    "202": _json_response("Accepted: the processor applies it in order."),
                    **_errors(400, 401, 403, 404, 409, 422, 503),
                },
            }
        },
        "/api/events": {
            "post": {
                "tags": ["api"],
                "summary": "Ingest a CloudEvent (structured JSON, or binary mode with ce-* headers).",
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/cloudevents+json": {"schema": {"type": "object"}},
                        JSON: {"schema": {}},
                    },
                },
                "responses": {
                    "202": _json_response("Accepted and published to its topic."),
                    **_errors(400, 401, 403, 422, 503),
                },
            }
        },
        "/api/stream": {
            "get": {
                "tags": ["api"],
                "summary": "Case changes as server-sent events (hello, case, resync, ended).",
                "security": BEARER,
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 503),
                },
            }
        },
    }


def _hook_paths() -> dict[str, dict[str, Any]]:
    """Alerting hooks: a case's ledger, silences, acknowledge links."""
    case_id = _path_param("case_id", "The case id.")
    silence_id = _path_param("silence_id", "The silence id.")
    ack_token = _path_param("token", "The signed token of the ack_url.")
    return {
        "/api/cases/{case_id}/deliveries": {
            "get": _read(
                "A case's escalation ledger: its alerts and their deliveries.",
                "The ledger.",
                404,
                parameters=[case_id],
            )
        },
        "/api/silences": {
            "get": _read("Active silences (headquarters tokens).", "The silences.", 403),
            "post": {
                "tags": ["api"],
                "summary": "Silence matching alerts for a while (headquarters tokens).",
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                "responses": {
                    "201": _json_response("The silence."),
                    **_errors(400, 401, 403, 422, 503),
                },
            },
        },
        "/api/silences/{silence_id}": {
            "get": _read("One silence.", "The silence.", 403, 404, parameters=[silence_id]),
            "delete": {
                "tags": ["api"],
                "summary": "Expire a silence now.",
                "security": BEARER,
                "parameters": [silence_id],
                "responses": {
                    "200": _json_response("The expired silence."),
                    **_errors(401, 403, 404, 422, 503),
                },
            },
        },
        "/api/silences/{silence_id}/expire": {
            "post": {
                "tags": ["api"],
                "summary": "Expire a silence now (for clients that cannot send DELETE).",
                "security": BEARER,
                "parameters": [silence_id],
                "responses": {
                    "200": _json_response("The expired silence."),
                    **_errors(401, 403, 404, 422, 503),
                },
            }
        },
        "/ack/{token}": {
            "get": {
                **_page("Confirm acknowledging a case from a notification's ack_url."),
                "parameters": [ack_token],
            },
            "post": {
                "tags": ["desk"],
                "summary": "Acknowledge the case (form field or JSON `actor`); the link is "
                "its own credential: single case, single use, expiring.",
                "parameters": [ack_token],
                "responses": {
                    "202": {"description": "Acknowledged (published as a case action)."},
                    **_errors(400, 403, 404, 409, 422, 503),
                    "410": {"description": "The link was used before or has expired."},
                },
            },
        },
    }


def _desk_paths() -> dict[str, dict[str, Any]]:
    """The desk's pages."""
    case_id = _path_param("case_id", "The case id.")
    return {
        "/desk": {"get": _page("The responders' queue (the sign-in form without a session).")},
        "/desk/board": {"get": _page("The headquarters board.")},
        "/desk/cases/{case_id}": {"get": {**_page("One case."), "parameters": [case_id]}},
        "/desk/session": {
            "get": {
                "tags": ["desk"],
                "summary": "Who is signed in, and the CSRF token.",
                "responses": {"200": _json_response("The session."), **_errors(401)},
            },
            "post": {
                "tags": ["desk"],
                "summary": "Sign in (form: token, actor, next).",
                "requestBody": {
                    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}
                },
                "responses": {
                    "303": {"description": "Signed in: to `next`."},
                    **{
                        str(c): {"description": "The form again, with why."}
                        for c in (401, 403, 422)
                    },
                },
            },
        },
        "/desk/signout": {
            "post": {
                "tags": ["desk"],
                "summary": "Sign out (with the CSRF header).",
                "responses": {"303": {"description": "Signed out."}, **_errors(403)},
            }
        },
        "/desk/static/{name}": {
            "get": {
                "tags": ["desk"],
                "summary": "The desk page's own files.",
                "parameters": [_path_param("name", "A file name.")],
                "responses": {"200": {"description": "The file."}, **_errors(404)},
            }
        },
    }


def _paths() -> dict[str, dict[str, Any]]:
    return {
        **_operation_paths(),
        **_read_paths(),
        **_write_paths(),
        **_hook_paths(),
        **_desk_paths(),
    }


def _open_keys(*names: str) -> dict[str, Any]:
    """Properties named, not typed (the contract lists the keys; rules.md their values)."""
    return {n: {} for n in names}


def _components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "garda tokens create --post ID | --hq",
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Case": {
                "type": "object",
                "properties": _open_keys(
                    "case_id",
                    "worker_id",
                    "kind",
                    "category",
                    "severity",
                    "status",
                    "post_id",
                    "escalation_level",
                    "ack_due",
                    "resolve_due",
                    "opened_at",
                    "reports",
                    "timeline",
                ),
            },
            "Worker": {
                "type": "object",
                "properties": _open_keys(
                    "worker_id",
                    "state",
                    "in_crisis",
                    "non_procedural",
                    "non_procedural_reasons",
                    "insured_until",
                    "open_cases",
                    "country",
                    "region",
                ),
            },
            "CaseAction": {
                "type": "object",
                "required": ["actor"],
                "properties": {
                    "actor": {"type": "string", "description": "The officer's id."},
                    "post_id": {"type": "string", "description": "The post acted as."},
                    **{f: {"type": "string"} for _, fs in ACTIONS.values() for f in fs},
                    "substantiated": {
                        "type": "boolean",
                        "description": "resolve: whether the complaint was found true.",
                    },
                },
                "additionalProperties": False,
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Garda HTTP API",
            "version": "1",
            "description": "See docs/contract.md, section 6.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": _paths(),
        "components": _components(),
    }


class OpenApiView(ApiView):
    async def get(self, request: Request) -> Response:
        return self.reply(document())


ROUTES = {"/api/openapi.json": OpenApiView}
