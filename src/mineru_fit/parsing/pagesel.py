"""Page ranges as users write them (`1-5,9`, `3-`), 1-based; pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from mineru_fit.errors import InputDocumentError, UsageError

_PART = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d+)?)?\s*$")


@dataclass(frozen=True)
class PageSelection:
    """Inclusive 1-based spans; `end=None` runs to the last page."""

    spans: tuple[tuple[int, Optional[int]], ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> "PageSelection":
        """'1-5,9' -> spans; a malformed range is a UsageError naming the bad part."""
        spans: list[tuple[int, Optional[int]]] = []
        for part in text.split(","):
            match = _PART.match(part)
            if not match:
                raise UsageError(f"--pages {text!r}: {part.strip()!r} is not a page or range — write e.g. 1-5,9 or 3-")
            start = int(match.group(1))
            end = None if match.group(2) and match.group(3) is None else int(match.group(3) or start)
            if start < 1 or (end is not None and end < start):
                raise UsageError(f"--pages {text!r}: {part.strip()!r} is empty — pages count from 1, low to high")
            spans.append((start, end))
        return cls(tuple(spans), text)

    def resolve(self, page_count: int) -> tuple[list[int], Optional[str]]:
        """0-based indices within `page_count`, in order, no duplicates, and a note when clamped.

        InputDocumentError when the selection holds none of the document's pages."""
        chosen: dict[int, None] = {}
        beyond = False
        for start, end in self.spans:
            last = page_count if end is None else end
            if last > page_count:
                beyond = True
            for number in range(start, min(last, page_count) + 1):
                chosen[number - 1] = None
        if not chosen:
            raise InputDocumentError(
                f"--pages {self.text} selects none of its {page_count} page{'s' if page_count != 1 else ''} — "
                f"pick pages between 1 and {page_count}"
            )
        note = f"--pages {self.text} goes beyond the last page ({page_count}): parsed the pages that exist" if beyond else None
        return sorted(chosen), note


def all_pages(page_count: int) -> list[int]:
    return list(range(page_count))
