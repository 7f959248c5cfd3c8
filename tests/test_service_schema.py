"""Schemathesis against the API's own OpenAPI schema on a real uvicorn: no generated request, valid or not,
gets a 5xx. (Driven through Hypothesis directly: schemathesis' pytest plugin does not load under pytest 9.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
schemathesis = pytest.importorskip("schemathesis")

from fixtures.service import running_service  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402

from mineru_fit.service import Limits, ServiceConfig  # noqa: E402
from mineru_fit.units import MIB  # noqa: E402

TOKEN = "schema-token"
EXAMPLES = 25  # per operation and mode: 7 operations x 2 modes, about three hundred requests in all


def test_no_request_the_schema_allows_or_breaks_gets_a_server_error(tmp_path: Path) -> None:
    config = ServiceConfig(data_dir=tmp_path / "data", workers=2, token=TOKEN,
                           limits=Limits(max_upload_bytes=MIB, max_pages=50, max_files=5))
    auth = {"authorization": f"Bearer {TOKEN}"}
    with running_service(config) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"POST /file_parse", "POST /tasks", "GET /tasks/{task_id}",
                                                   "GET /tasks/{task_id}/result", "GET /health", "GET /metrics"}
        started, calls = time.monotonic(), []
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def check(case) -> None:
                    response = case.call_and_validate(headers=auth, checks=[not_a_server_error], timeout=60)
                    calls.append(response.status_code)

                try:
                    check()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to break in an operation without inputs
        print(f"{len(calls)} requests in {time.monotonic() - started:.1f} s; statuses {sorted(set(calls))}")
        assert len(calls) > 50
