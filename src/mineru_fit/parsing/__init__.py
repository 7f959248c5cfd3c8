"""Documents -> pages -> MinerU2.5 (or docvortex, model-free) -> Markdown and MinerU's JSON.

providers/ read PDFs and images, builders/ turn an engine's blocks into content_list items,
renderers/ write the files, vlm/ runs pages through a model within the plan's memory budget.
Importing this package imports no torch and no docvortex.
"""

from mineru_fit.parsing.options import DEFAULT_DPI, ParseOptions, VlmSetup
from mineru_fit.parsing.pagesel import PageSelection
from mineru_fit.parsing.pipeline import parse_documents, parse_documents_async
from mineru_fit.parsing.results import FileResult, PageRecord, ParseReport, Status
from mineru_fit.parsing.tiers import TierChoice, choose_tier

__all__ = [
    "DEFAULT_DPI",
    "FileResult",
    "PageRecord",
    "PageSelection",
    "ParseOptions",
    "ParseReport",
    "Status",
    "TierChoice",
    "VlmSetup",
    "choose_tier",
    "parse_documents",
    "parse_documents_async",
]
