"""mineru-api's multipart form for POST /file_parse and POST /tasks, and the bodies the API answers with.

A client written for MinerU's `mineru-api` works unchanged: the same field names, MinerU's backend
names mapped onto our tiers, page ids counted from 0, and the JSON it expects back
(`{"backend", "version", "results": {name: {"md_content", "content_list", "images"}}}`, with
content_list as a JSON string, as mineru-api sends it). Unknown fields are refused.
"""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from mineru_fit.errors import RequestRefusedError, UsageError
from mineru_fit.parsing import PageSelection
from mineru_fit.service.core import JobRequest

_VLM_PREFIXES = ("vlm-", "hybrid-")
# MinerU 4's model tiers; its "pipeline" (classic models) maps to our model-free tier.
_VLM_NAMES = ("vlm", "hybrid", "basic", "standard", "advanced")
_FLASH_NAMES = ("flash", "pipeline")


def map_backend(name: str) -> str:
    """auto | vlm | flash for one of MinerU's backend names (or ours)."""
    key = name.strip().lower()
    if key in ("", "auto"):
        return "auto"
    if key in _FLASH_NAMES:
        return "flash"
    if key in _VLM_NAMES or key.startswith(_VLM_PREFIXES):
        return "vlm"
    raise RequestRefusedError(f"backend {name[:60]!r} is not known — use auto, flash (or pipeline), or vlm "
                              "(or any vlm-*/hybrid-* name)")


class ParseForm(BaseModel):
    """The fields of mineru-api's /file_parse form; what does not apply here is accepted and said so."""

    model_config = ConfigDict(extra="forbid")

    files: list[UploadFile] = Field(description="PDF, PNG, JPEG or WebP files (their type is read from their bytes).")
    backend: str = Field("auto", max_length=100, description=(
        "auto (vlm when this service has an engine, else flash), flash or pipeline (model-free), vlm or any "
        "of MinerU's vlm-*/hybrid-* names."))
    tier: Optional[Literal["auto", "vlm", "flash"]] = Field(None, description="mineru-fit's name for the same choice.")
    lang_list: list[str] = Field(default_factory=lambda: ["ch"], description="Accepted; neither tier uses it.")
    parse_method: Literal["auto", "txt", "ocr"] = Field("auto", description=(
        "Accepted; flash always reads the text layer, vlm always reads the page image."))
    formula_enable: bool = Field(True, description="Accepted; vlm always recognises formulas.")
    table_enable: bool = Field(True, description="Accepted; both tiers always extract tables.")
    server_url: Optional[str] = Field(None, max_length=2000, description=(
        "Refused when set: this service never contacts an address a request names (its engine is chosen at start)."))
    output_dir: Optional[str] = Field(None, max_length=4096, description=(
        "Ignored: outputs stay in the service's data dir."))
    return_md: bool = Field(True, description="Include each file's Markdown (md_content).")
    return_middle_json: bool = Field(False, description="Refused when true: mineru-fit writes no middle.json.")
    return_model_output: bool = Field(False, description="Refused when true: mineru-fit writes no model output file.")
    return_content_list: bool = Field(False, description="Include each file's content_list (a JSON string).")
    return_images: bool = Field(False, description="Include each file's images as data URLs.")
    response_format_zip: bool = Field(False, description="Answer with a zip of the outputs instead of JSON.")
    start_page_id: int = Field(0, ge=0, description="First page to parse, counted from 0.")
    end_page_id: Optional[int] = Field(None, ge=0, description="Last page to parse, counted from 0 (default: the last).")

    def to_request(self) -> JobRequest:
        """The validated job request; RequestRefusedError (422) for what cannot be honoured."""
        tier = map_backend(self.backend)
        if self.tier is not None and self.tier != "auto":
            if tier != "auto" and tier != self.tier:
                raise RequestRefusedError(f"backend {self.backend!r} and tier {self.tier!r} disagree — send one of them")
            tier = self.tier
        if self.server_url:
            raise RequestRefusedError("server_url is not accepted: this service never contacts an address a request "
                                      "names — its engine is set when it starts (mineru-fit start api --server URL)")
        if self.return_middle_json or self.return_model_output:
            raise RequestRefusedError("return_middle_json/return_model_output: mineru-fit writes neither — ask for "
                                      "return_content_list (blocks with bbox, type, page_idx) instead")
        if self.end_page_id is not None and self.end_page_id < self.start_page_id:
            raise RequestRefusedError(f"end_page_id {self.end_page_id} is before start_page_id {self.start_page_id} "
                                      "— both count from 0")
        return JobRequest(tier=tier, backend=self.backend, pages=page_selection(self.start_page_id, self.end_page_id),
                          return_md=self.return_md, return_content_list=self.return_content_list,
                          return_images=self.return_images, zip=self.response_format_zip)


def page_selection(start_page_id: int, end_page_id: Optional[int]) -> Optional[PageSelection]:
    """mineru-api's 0-based, inclusive page ids as a 1-based PageSelection (None: every page)."""
    if start_page_id == 0 and end_page_id is None:
        return None
    text = f"{start_page_id + 1}-" + ("" if end_page_id is None else str(end_page_id + 1))
    try:
        return PageSelection.parse(text)
    except UsageError as exc:  # cannot happen for ids validated above; say so plainly if it does
        raise RequestRefusedError(f"page ids {start_page_id}–{end_page_id} are not a page range") from exc


# --- what the API answers ---------------------------------------------------------------------
class FileResultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(description="success, partial or failure for this file")
    errors: list[str] = Field(default_factory=list, description="Why pages (or the file) were not converted.")
    notes: Optional[list[str]] = None
    md_content: Optional[str] = None
    content_list: Optional[str] = Field(None, description="The content_list JSON, as a string (as mineru-api sends it).")
    images: Optional[dict[str, str]] = Field(None, description="Image file name -> data URL.")


class ParseResultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str
    version: str
    task_id: str
    status: str = Field(description="succeeded, partial or failed")
    tier: str
    error: Optional[str] = None
    results: dict[str, FileResultBody]


class Progress(BaseModel):
    pages_done: int = Field(description="Pages settled: converted, resumed, or failed for good.")
    pages_failed: int
    pages_total: int


class TaskFile(BaseModel):
    name: str = Field(description="The key of this file in `results`.")
    filename: str = Field(description="The name the client sent.")
    size_bytes: int
    pages: int


class TaskBody(BaseModel):
    task_id: str
    status: str = Field(description="queued, running, succeeded, partial or failed")
    backend: str
    tier: str
    tier_reason: str
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    queue_position: Optional[int] = None
    progress: Progress
    current: Optional[str] = Field(None, description="What the worker is doing now.")
    files: list[TaskFile]
    error: Optional[str] = None
    errors: list[str] = Field(default_factory=list, description="Per-file and per-page problems, one line each.")
    status_url: str
    result_url: str


class StoreBody(BaseModel):
    writable: bool = Field(description="Whether jobs can be stored and recorded now.")
    error: Optional[str] = Field(None, description="Why the data dir cannot be written (full, read-only, failing).")
    free_bytes: Optional[int] = Field(None, description="Free space on the data dir's file system.")


class HealthBody(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded (HTTP 503): the job store cannot be written — "
                                                          "submissions are refused and waiting jobs resume when it can")
    version: str
    engine: str = Field(description="none, server, builtin, sglang or vllm")
    engine_level: Optional[str] = None
    tiers: list[str] = Field(description="The tiers jobs can run with here.")
    workers: int
    queued: int
    running: int
    store: StoreBody
