"""The HTTP edge's reading of Garda's domain errors: which status code answers which error.

The rules raise ``errors`` subclasses that say why an event is refused; only the API turns
them into status codes, here. A ``Rejected`` of no narrower kind answers 409.
"""

from __future__ import annotations

from errors import (
    Conflict,
    Forbidden,
    GardaError,
    InvalidEvent,
    NotFound,
    Rejected,
    Unacceptable,
    Unauthorized,
)

HTTP_STATUS: dict[type[GardaError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Rejected: 409,
    Unacceptable: 422,
    InvalidEvent: 422,
}


def http_status(exc: GardaError) -> int:
    """The status code for ``exc``: its nearest class in ``HTTP_STATUS``, else 500."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
