"""The HTTP API as Faust web views, one module per concern; reads come from PostgreSQL.

Each module exports ``ROUTES`` (path → view class); :func:`register` mounts them all. To add
an endpoint, add a view to the module of its concern (or a new module) and list it there.
"""

from __future__ import annotations

from typing import Any

from streams.web import (
    ack,
    actions,
    agencies,
    desk,
    employers,
    health,
    hooks,
    ingest,
    live,
    openapi,
    reads,
)

MODULES = (health, reads, hooks, ingest, actions, live, desk, ack, openapi, employers, agencies)


def routes() -> dict[str, type]:
    """Every path Garda serves, with its view class."""
    out: dict[str, type] = {}
    for module in MODULES:
        out.update(module.ROUTES)
    return out


def register(app: Any) -> None:
    for path, view in routes().items():
        app.page(path)(view)
