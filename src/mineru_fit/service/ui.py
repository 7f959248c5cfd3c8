"""The Gradio UI, mounted beside the API: upload, tier, live progress, Markdown, content_list, a zip, GPU memory.

It submits through the same ServiceCore as the API, so a job from the UI is stored, queued,
resumed after a restart and listed under /tasks like any other.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import mimetypes
import os
import re
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from mineru_fit.errors import RequestRefusedError, UsageError
from mineru_fit.parsing import PageSelection
from mineru_fit.service.core import JobRequest, ServiceCore, Upload
from mineru_fit.service.files import file_chunks
from mineru_fit.service.jobs import Job
from mineru_fit.service.memory import panel_markdown, read_panel
from mineru_fit.service.results import FileOutput, Wanted, file_outputs, write_zip

UI_PATH = "/ui"
MEMORY_REFRESH_S = 3.0
PROGRESS_POLL_S = 0.5
INLINE_IMAGES_MAX_BYTES = 8 * 1024 * 1024   # larger image sets stay links in the rendered view
_IMAGE_LINK = re.compile(r"\]\((images/[^)\s]+)\)")


def tier_choices(core: ServiceCore) -> list[tuple[str, str]]:
    engine = core.config.engine
    choices = [("auto — vlm when the engine is here, else flash", "auto")]
    if engine.url is not None:
        level = f", level {engine.level}" if engine.level else ""
        choices.append((f"vlm — MinerU2.5 on the {engine.kind} engine{level}", "vlm"))
    choices.append(("flash — model-free, born-digital PDFs", "flash"))
    return choices


def _progress_text(job: Job, core: ServiceCore) -> str:
    done, total = job.pages_done, job.pages_total
    text = f"**{job.status.value}** — {done}/{total} pages"
    if job.pages_failed:
        text += f", {job.pages_failed} not converted"
    text += f" · tier {job.options.tier} · task `{job.id}`"
    position = core.queue_position(job.id)
    if position:
        text += f" · waiting, number {position} in the queue"
    current = core.current(job.id)
    if current and not job.status.finished:
        text += f" · {current}"
    if job.error:
        text += f"\n\n{job.error}"
    errors = [f"- {f['name']}: {e}" for f in (job.report or {}).get("files", []) for e in f.get("errors", [])]
    return text + ("\n\n" + "\n".join(errors[:20]) if errors else "")


def _inline_images(markdown: str, output: FileOutput) -> str:
    """The Markdown's images/ links as data URLs, so the rendered view shows them."""
    folder = output.folder
    if folder is None:
        return markdown
    sizes = sum(p.stat().st_size for p in output.images())
    if sizes > INLINE_IMAGES_MAX_BYTES:
        return markdown

    def data_url(match: re.Match[str]) -> str:
        path = output.image_file(match.group(1))
        if path is None:  # a link out of the job's images/ (`..`, a symlink) stays a plain link
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"](data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    return _IMAGE_LINK.sub(data_url, markdown)


def _outputs(core: ServiceCore, job: Job) -> tuple[str, str, Any, Optional[str]]:
    """(rendered Markdown, raw Markdown, content_list by file, zip path) of a finished job."""
    outputs = file_outputs(job, core.job_dir(job.id))
    raw_parts, rendered_parts, lists = [], [], {}
    for output in outputs:
        path = output.path(".md")
        markdown = path.read_text(encoding="utf-8") if path else f"<!-- {output.name}: no Markdown -->"
        raw_parts.append(markdown)
        rendered_parts.append(_inline_images(markdown, output))
        content = output.path("_content_list.json")
        lists[output.name] = json.loads(content.read_text(encoding="utf-8")) if content else []
    zip_path = None
    if outputs:
        zip_path = str(write_zip(outputs, core.exports_dir / f"{job.id}.zip", Wanted(md=True, content_list=True, images=True)))
    rule = "\n\n---\n\n"
    return rule.join(rendered_parts), rule.join(raw_parts), lists, zip_path


def build_ui(core: ServiceCore) -> Any:
    """The Blocks app over `core`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    async def parse(paths: Optional[list[str]], tier: str, pages: str) -> AsyncIterator[tuple[Any, ...]]:
        keep = gr.skip()
        if not paths:
            yield "Upload a PDF or an image first.", keep, keep, keep, keep
            return
        try:
            selection = PageSelection.parse(pages) if pages and pages.strip() else None
            uploads = [Upload(Path(p).name, file_chunks(Path(p))) for p in paths]
            job: Optional[Job] = await core.submit(uploads, JobRequest(
                tier=tier, backend=tier, pages=selection, return_md=True, return_content_list=True,
                return_images=True))
        except (RequestRefusedError, UsageError) as exc:
            yield f"**refused:** {exc}", keep, keep, keep, keep
            return
        assert job is not None
        while job is not None and not job.status.finished:
            yield _progress_text(job, core), keep, keep, keep, keep
            job = await core.wait(job.id, timeout_s=PROGRESS_POLL_S)
        if job is None:
            yield "The job was deleted.", "", "", None, None
            return
        rendered, raw, lists, zip_path = await asyncio.to_thread(_outputs, core, job)
        yield _progress_text(job, core), rendered, raw, lists, zip_path

    def memory() -> str:
        return panel_markdown(read_panel(core.config.device_mode, core.config.engine.url))

    with gr.Blocks(title="mineru-fit", analytics_enabled=False) as blocks:
        gr.Markdown("## mineru-fit — documents to Markdown, inside your GPU's memory")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="PDF or image files", file_count="multiple",
                                file_types=[".pdf", ".png", ".jpg", ".jpeg", ".webp"], elem_id="upload")
                tier = gr.Radio(tier_choices(core), value="auto", label="Tier / level", elem_id="tier")
                if core.config.engine.url is None:
                    gr.Markdown(f"_vlm is not available here: {core.config.engine.reason}_")
                pages = gr.Textbox(label="Pages (1-based, e.g. 1-5,9; empty: all)", elem_id="pages")
                go = gr.Button("Parse", variant="primary", elem_id="parse")
                status = gr.Markdown(elem_id="status")
                gr.Markdown("#### GPU memory")
                panel = gr.Markdown(elem_id="memory")
            with gr.Column(scale=2):
                with gr.Tab("Rendered"):
                    rendered = gr.Markdown(elem_id="rendered")
                with gr.Tab("Markdown"):
                    raw = gr.Code(language="markdown", elem_id="raw")
                with gr.Tab("content_list"):
                    content = gr.JSON(elem_id="content-list")
                download = gr.File(label="All outputs (zip)", elem_id="download", interactive=False)
        # The pool bounds how many jobs run; the UI must not queue them one by one on top of that.
        go.click(parse, inputs=[files, tier, pages], outputs=[status, rendered, raw, content, download],
                 concurrency_limit=None)
        gr.Timer(MEMORY_REFRESH_S).tick(memory, outputs=panel, concurrency_limit=None, show_progress="hidden")
        blocks.load(memory, outputs=panel)
    return blocks


def mount_ui(app: Any, core: ServiceCore) -> Any:
    """Mount the UI at /ui on the API's app (login with the API token as password when one is set)."""
    import gradio as gr
    from fastapi.responses import RedirectResponse

    token = core.config.token
    auth = None
    if token:
        auth = lambda _user, password: hmac.compare_digest(str(password).encode(), token.encode())  # noqa: E731

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/")

    return gr.mount_gradio_app(app, build_ui(core), path=UI_PATH, allowed_paths=[str(core.exports_dir)],
                               max_file_size=core.config.limits.max_upload_bytes, auth=auth,
                               auth_message="Password: the service's MINERU_FIT_API_TOKEN" if token else None,
                               ssr_mode=False, show_error=True, footer_links=[])
