"""MinerU 4's tier names and what each runs here — said plainly, never a silent substitution.

MinerU 4: flash (model-free, docvortex), basic (PP-DocLayoutV2 layout + PP-OCRv6 + formula and
table models), standard (those local models + the MinerU2.5-Pro VLM, "hybrid"), advanced (the
same at a higher effort). mineru-fit runs flash as MinerU does, and standard as its vlm tier:
MinerU2.5's own two-step extraction on the memory-fitted engine, without MinerU's local hybrid
models. basic and advanced are not run here and are refused by name.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Optional

from mineru_fit import __version__
from mineru_fit.service.config import EngineInfo
from mineru_fit.service.v1.errors import fail

MODEL_ID = f"mineru-fit-{__version__}"
MODEL_DESCRIPTION = ("mineru-fit parse server. Quality is chosen per request with tier (flash, standard); "
                     "this id names the server version, not an engine.")
FLASH = ("Fast local text extraction (docvortex, no model, no GPU memory): born-digital PDFs only — a page "
         "without a text layer is reported as not converted. Same engine as MinerU 4's flash.")
STANDARD = ("mineru-fit's vlm tier: MinerU2.5's two-step extraction (layout, then each block) on the memory-fitted "
            "{engine} engine{level}, post-processed with docvortex as MinerU 4 does. Unlike MinerU 4's standard it runs "
            "no local OCR/table/formula models (no hybrid) and uses the engine's MinerU2.5 model ({model}).")
NOT_HERE = {
    "basic": "MinerU 4's basic tier runs its local pipeline models (PP-DocLayoutV2, PP-OCRv6, formula and table "
             "models), which mineru-fit does not ship",
    "advanced": "MinerU 4's advanced tier is its hybrid VLM pipeline at a higher effort, which mineru-fit does not run",
}
OURS = {"flash": "flash", "standard": "vlm"}


def flash_available() -> bool:
    return importlib.util.find_spec("docvortex") is not None


def tier_list(engine: EngineInfo) -> list[dict[str, Any]]:
    """/v1/tiers' data: only what runs here."""
    data = []
    if flash_available():
        data.append({"id": "flash", "description": FLASH, "current_model": MODEL_ID})
    if engine.url:
        level = f" at level {engine.level}" if engine.level else ""
        data.append({"id": "standard", "description": STANDARD.format(
            engine=engine.kind, level=level, model=engine.model_name or "as configured"), "current_model": MODEL_ID})
    return data


def resolve(requested: Optional[str], engine: EngineInfo) -> str:
    """The MinerU tier a job runs with (MinerU's default: the best quality tier here, else refuse)."""
    available = [t["id"] for t in tier_list(engine)]
    if requested is None:
        if "standard" in available:
            return "standard"
        fail(503, "quality_tier_unavailable", "No basic, standard, or advanced tier available in this server "
             "(it has no vlm engine). Pass tier='flash' explicitly for flash parsing.", error_type="engine_error")
    if requested in NOT_HERE:
        fail(400, "tier_not_supported", f"tier '{requested}' is not run by mineru-fit: {NOT_HERE[requested]} — use "
             f"{' or '.join(available) or 'flash'} (GET /v1/tiers says what each runs here)", param="tier")
    if requested not in available:
        why = ("this server has no vlm engine (start it with a model or --server URL)" if requested == "standard"
               else "docvortex is not installed (pip install 'mineru-fit[flash]')")
        fail(400, "tier_unavailable", f"Tier '{requested}' not available in this server: {why}", param="tier")
    return requested
