"""A finished job's outputs, read back from its folder: per file Markdown, content_list, images; or one zip."""

from __future__ import annotations

import base64
import json
import mimetypes
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mineru_fit.service.jobs import Job
from mineru_fit.service.redact import redact_paths


@dataclass(frozen=True)
class FileOutput:
    """Where one input's outputs are (folder None: it failed before any was written)."""

    name: str
    status: str                         # success | partial | failure
    folder: Optional[Path]
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def path(self, suffix: str) -> Optional[Path]:
        if self.folder is None:
            return None
        path = self.folder / f"{self.name}{suffix}"
        return path if path.is_file() else None

    def images(self) -> list[Path]:
        """The files of this output's images/ folder (each checked as image_file checks a link)."""
        folder = self.folder / "images" if self.folder is not None else None
        if folder is None or not folder.is_dir():
            return []
        return sorted(p for p in (self.image_file(f"images/{entry.name}") for entry in folder.iterdir()) if p)

    def image_file(self, link: str) -> Optional[Path]:
        """The file a Markdown link such as `images/x.png` names, or None unless, once resolved (`..` and
        symlinks followed), it is a regular file directly inside this output's own images/ folder.

        Markdown is text a document can carry, so a link is never trusted as a path: this is the one
        check every reader of images (the UI's inlining, results, zips) goes through.
        """
        if self.folder is None:
            return None
        try:
            root = (self.folder / "images").resolve(strict=True)
            path = (self.folder / link).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a symlink loop, a name the OS refuses
            return None
        return path if path.parent == root and path.is_file() else None


@dataclass(frozen=True)
class Wanted:
    """Which outputs a result carries (mineru-api's return_* flags)."""

    md: bool = True
    content_list: bool = False
    images: bool = False


def file_outputs(job: Job, job_dir: Path) -> list[FileOutput]:
    """One FileOutput per input, in upload order, from the job's report."""
    report = job.report or {}
    outputs = []
    for entry in report.get("files", []):
        name, tier = str(entry.get("name")), str(entry.get("tier") or job.options.tier)
        folder = job_dir / "output" / name / tier
        outputs.append(FileOutput(name=name, status=str(entry.get("status", "failure")),
                                  folder=folder if folder.is_dir() else None,
                                  errors=tuple(entry.get("errors", [])), notes=tuple(entry.get("notes", []))))
    return outputs


def _read(path: Optional[Path]) -> Optional[str]:
    return path.read_text(encoding="utf-8") if path is not None else None


def _data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def file_body(output: FileOutput, wanted: Wanted) -> dict[str, Any]:
    """One entry of `results`, as mineru-api writes it: md_content, content_list (a JSON string), images (data URLs)."""
    body: dict[str, Any] = {"status": output.status, "errors": list(output.errors)}
    if output.notes:
        body["notes"] = list(output.notes)
    if wanted.md:
        body["md_content"] = _read(output.path(".md"))
    if wanted.content_list:
        body["content_list"] = _read(output.path("_content_list.json"))
    if wanted.images:
        body["images"] = {p.name: _data_url(p) for p in output.images()}
    return body


def write_zip(outputs: list[FileOutput], dest: Path, wanted: Wanted) -> Path:
    """<name>/<name>.md, <name>_content_list.json, images/, <name>_pages.json per file, as wanted."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for output in outputs:
            members: list[tuple[Optional[Path], str]] = [(output.path("_pages.json"), f"{output.name}_pages.json")]
            if wanted.md:
                members.append((output.path(".md"), f"{output.name}.md"))
            if wanted.content_list:
                members.append((output.path("_content_list.json"), f"{output.name}_content_list.json"))
            if wanted.images:
                members += [(p, f"images/{p.name}") for p in output.images()]
            for path, arcname in members:
                if path is not None and arcname.endswith("_pages.json"):  # per-page reasons: no server paths
                    archive.writestr(f"{output.name}/{arcname}", redact_paths(path.read_text(encoding="utf-8")))
                elif path is not None:
                    archive.write(path, f"{output.name}/{arcname}")
            if output.errors:
                archive.writestr(f"{output.name}/errors.json", json.dumps(list(output.errors), indent=2))
    return dest
