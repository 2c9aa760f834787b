"""The OpenAPI document names exactly the routes and methods Garda registers, and is valid
OpenAPI 3.1."""

from __future__ import annotations

import re

import pytest
from faust.web import View
from openapi_spec_validator import validate

from streams.web import openapi, routes

METHODS = ("get", "post", "put", "patch", "delete")


def _shape(path: str) -> str:
    """The path with its parameters unnamed (``/api/schemas/{type_}`` -> ``/api/schemas/{}``)."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def _served() -> set[tuple[str, str]]:
    out = set()
    for path, view in routes().items():
        for method in METHODS:
            if getattr(view, method) is not getattr(View, method):
                out.add((_shape(path), method))
    return out


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(_shape(p), m) for p, ops in doc["paths"].items() for m in ops if m in METHODS}


def test_every_route_is_documented_and_nothing_else() -> None:
    served, documented = _served(), _documented(openapi.document())
    assert served - documented == set(), "served but not in the OpenAPI document"
    assert documented - served == set(), "documented but not served"


def test_the_check_sees_a_missing_route() -> None:
    doc = openapi.document()
    del doc["paths"]["/api/posts"]
    assert ("/api/posts", "get") in _served() - _documented(doc)


def test_it_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_path_parameters_match_the_path() -> None:
    for path, ops in openapi.document()["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in ops.items():
            given = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert given == names, (path, method)


@pytest.mark.parametrize("path", ["/api/cases/{case_id}/{action}", "/api/schemas/{type}"])
def test_enumerations_come_from_the_code(path: str) -> None:
    from schemas.types import list_types
    from streams.web.actions import ACTIONS

    op = next(iter(openapi.document()["paths"][path].values()))
    enum = next(p["schema"]["enum"] for p in op["parameters"] if "enum" in p["schema"])
    assert set(enum) == (set(ACTIONS) if "action" in path else set(list_types()))
