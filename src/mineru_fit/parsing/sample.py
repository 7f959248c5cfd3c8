"""A small born-digital sample PDF, made here (offline, deterministic): headings, a list, a table, a figure.

`mineru-fit sample-pdf OUT` writes it; `make demo` parses it. reportlab comes with the flash extra.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from mineru_fit.errors import MissingExtraError

TITLE = "mineru-fit sample document"
HEADINGS = ("1 Introduction", "2 Memory by level", "3 Throughput", "4 Conclusion")
TABLE = (
    ("Level", "Weights", "Context", "Batch"),
    ("basic", "bf16", "8192", "8"),
    ("aggressive", "int8", "4096", "4"),
    ("extreme", "nf4", "2048", "1"),
)
TABLE_CAPTION = "Table 1: What each optimisation level turns down"
FIGURE_CAPTION = "Figure 1: Pages per second by batch size"
LIST_ITEMS = (
    "Plan the memory budget before anything starts.",
    "Serve the model inside that budget.",
    "Parse documents without losing a page.",
)
PARAGRAPH = (
    "MinerU2.5 turns document pages into Markdown with a 1.2B vision-language model. This sample "
    "exercises what a parser must keep: headings, running text, a list, a table and a figure with "
    "its caption, spread over several pages."
)


def _figure_png() -> bytes:
    """A bar chart as a raster image, so it is a picture in the PDF, not text."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.line((40, 260, 460, 260), fill="black", width=2)
    draw.line((40, 20, 40, 260), fill="black", width=2)
    for i, height in enumerate((40, 90, 150, 190, 210)):
        left = 70 + i * 78
        draw.rectangle((left, 260 - height, left + 48, 258), fill=(60, 110, 180))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _story(styles: Any) -> list[Any]:
    from reportlab.lib import colors
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, ListFlowable, ListItem, PageBreak, Paragraph, Spacer, Table, TableStyle

    body, heading = styles["BodyText"], styles["Heading1"]
    table = Table([list(row) for row in TABLE], colWidths=[4 * cm, 3 * cm, 3 * cm, 2.5 * cm])
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.8, colors.black),
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
    ]))
    figure = Image(io.BytesIO(_figure_png()), width=12 * cm, height=7.5 * cm)
    return [
        Paragraph(TITLE, styles["Title"]),
        Paragraph(HEADINGS[0], heading), Paragraph(PARAGRAPH, body), Spacer(1, 6),
        ListFlowable([ListItem(Paragraph(text, body)) for text in LIST_ITEMS], bulletType="bullet"),
        PageBreak(),
        Paragraph(HEADINGS[1], heading),
        Paragraph("The planner sizes every level; the table lists what each one turns down.", body),
        Spacer(1, 8), table, Spacer(1, 4), Paragraph(TABLE_CAPTION, body),
        PageBreak(),
        Paragraph(HEADINGS[2], heading),
        Paragraph("Larger batches parse more pages per second until memory runs out.", body),
        Spacer(1, 8), figure, Paragraph(FIGURE_CAPTION, body),
        Paragraph(HEADINGS[3], heading),
        Paragraph("Every page is converted or reported with the reason it was not.", body),
    ]


def write_sample_pdf(path: Path) -> Path:
    """Write the three-page sample to `path` (byte-identical on every run)."""
    try:
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.styles import getSampleStyleSheet
        from reportlab.platypus import SimpleDocTemplate
    except ImportError as exc:
        raise MissingExtraError("reportlab", "flash") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=A4, title=TITLE, author="mineru-fit", invariant=1)
    doc.build(_story(getSampleStyleSheet()))
    return path
