"""The UI's rendered view inlines only the job's own images: a Markdown link out of images/ (text any PDF can
contain) never turns a server file into a data URL."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

from fastapi.testclient import TestClient  # noqa: E402

from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402
from mineru_fit.service.ui import _outputs  # noqa: E402

DEEP = "../" * 12


def _pdf_with_a_figure_and_links(path: Path, links: list[str]) -> bytes:
    """A page with a raster figure (so the output has an images/ folder) and text that carries Markdown links."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    from mineru_fit.parsing.sample import _figure_png

    c = canvas.Canvas(str(path), invariant=1)
    for row, link in enumerate(links):
        c.drawString(72, 780 - 16 * row, f"See ![x]({link}) here")
    c.drawImage(ImageReader(io.BytesIO(_figure_png())), 72, 300, 340, 212)
    c.showPage()
    c.save()
    return path.read_bytes()


def _finished(client: TestClient, core: ServiceCore, name: str, data: bytes):
    task = client.post("/tasks", files=[("files", (name, data, "application/pdf"))]).json()
    deadline = time.monotonic() + 60
    while client.get(task["status_url"]).json()["status"] not in ("succeeded", "partial", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job = client.portal.call(core.get, task["task_id"])
    assert job is not None
    return job


def test_links_out_of_images_are_never_inlined_but_the_jobs_images_are(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = tmp_path_factory.mktemp("leak") / "secret.txt"  # a path without "_", which Markdown would escape
    secret.write_text("TOKEN=do-not-leak-this-secret-value\n")
    links = [f"images/{DEEP}etc/passwd", f"images/{DEEP}proc/self/environ", f"images/{DEEP}{str(secret)[1:]}"]
    evil = _pdf_with_a_figure_and_links(tmp_path / "evil.pdf", links)
    core = ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=1))
    with TestClient(create_app(core)) as client:
        rendered, raw, _lists, _zip = _outputs(core, _finished(client, core, "evil.pdf", evil))
        for link in links:
            assert link in raw  # the PDF's text really carries the link ...
        for leak in (Path("/etc/passwd").read_bytes()[:30], secret.read_bytes()[:30]):
            assert base64.b64encode(leak)[:20].decode() not in rendered  # ... and none became a data URL
        assert rendered.count("](data:image/") == 1  # the figure still is



def test_a_symlink_in_images_is_neither_listed_nor_inlined(tmp_path: Path) -> None:
    from mineru_fit.service.results import FileOutput

    folder = tmp_path / "out" / "doc" / "flash"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "fig.png").write_bytes(b"\x89PNG real figure")
    (folder / "images" / "leak.png").symlink_to("/etc/passwd")
    output = FileOutput("doc", "success", folder)
    assert [p.name for p in output.images()] == ["fig.png"]
    assert output.image_file("images/fig.png") == (folder / "images" / "fig.png").resolve()
    for link in ("images/leak.png", "images/../../../../../../../../etc/passwd", "images/", "images/nope.png"):
        assert output.image_file(link) is None
