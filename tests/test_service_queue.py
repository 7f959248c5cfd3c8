"""--max-queue holds for simultaneous submissions: with one worker and five places, forty uploads at once get
six acceptances (one running, five waiting) and 503s with Retry-After for the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

import httpx  # noqa: E402
from fixtures.documents import many_pages_pdf  # noqa: E402

from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402

UPLOADS = 40


def test_forty_simultaneous_uploads_respect_max_queue(tmp_path: Path) -> None:
    pdf = many_pages_pdf(tmp_path / "long.pdf", 300).read_bytes()  # seconds of work: nothing finishes meanwhile

    async def scenario() -> tuple[list[httpx.Response], int]:
        core = ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=1, max_queue=5))
        async with core:
            transport = httpx.ASGITransport(app=create_app(core, manage_core=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=120) as api:
                responses = await asyncio.gather(*(
                    api.post("/tasks", files=[("files", (f"d{n}.pdf", pdf, "application/pdf"))])
                    for n in range(UPLOADS)))
                waiting = core.pool.waiting if core.pool else -1
                for response in responses:  # nothing left running when the core stops
                    if response.status_code == 202:
                        await api.delete(response.json()["status_url"])
        return responses, waiting

    responses, waiting = asyncio.run(scenario())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 6, statuses
    assert statuses.count(503) == UPLOADS - 6, statuses
    assert waiting <= 5
    for refused in (r for r in responses if r.status_code == 503):
        assert int(refused.headers["retry-after"]) >= 1 and "waiting" in refused.json()["detail"]
