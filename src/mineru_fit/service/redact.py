"""What a client may read of the server: job errors without its absolute paths.

Parsers and the OS name the files they fail on ("No space left on device: '/srv/…/jobs/<id>/output/…'"),
which tells a client where the service keeps its data and who runs it. Every error a job carries is
passed through here before it is stored, so the API, the UI and the zips only ever show file names.
"""

from __future__ import annotations

import re
from typing import Any, Optional

# An absolute path: a '/' not inside a word, a URL or a relative path, then at least one folder.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~-])/(?:[^\s'\"/:,;()<>\[\]{}]+/)+([^\s'\"/:,;()<>\[\]{}]*)")


def redact_paths(text: str) -> str:
    """`text` with each absolute path replaced by its last component."""
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "…", text)


def redact_optional(text: Optional[str]) -> Optional[str]:
    return redact_paths(text) if text is not None else None


def redact_report(report: dict[str, Any]) -> dict[str, Any]:
    """A parse report as clients may see it: errors and notes without paths, no server locations at all."""
    hidden = ("path", "output_dir", "markdown")
    files = []
    for entry in report.get("files", []):
        entry = {k: v for k, v in entry.items() if k not in hidden}
        entry["errors"] = [redact_paths(str(e)) for e in entry.get("errors", [])]
        entry["notes"] = [redact_paths(str(n)) for n in entry.get("notes", [])]
        files.append(entry)
    return {**report, "files": files, "notes": [redact_paths(str(n)) for n in report.get("notes", [])]}
