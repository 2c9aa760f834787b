"""A running worker serves its OpenAPI document without a token."""

from __future__ import annotations

from streams.web import openapi
from tests.integration.harness import WorkerProcess, get_json


async def test_the_worker_serves_its_openapi_document(worker: WorkerProcess) -> None:
    status, body = await get_json(f"{worker.url}/api/openapi.json")
    assert status == 200
    assert body == openapi.document()
