"""HTML pieces every report section uses (torch-free): tables, figures with their 95 %
intervals, matplotlib figures embedded as PNG data URLs.

They sit below the tasks and the report driver, so a task's report section and the driver
format a figure the same way without importing each other."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def value(entry: dict[str, Any] | float | None) -> float | None:
    """A figure's point estimate, whether stored as ``{value, ci_low, ci_high}`` or a float."""
    return entry.get("value") if isinstance(entry, dict) else entry


def png(fig: Figure) -> str:
    """The figure as a PNG data URL (closed afterwards): the report is one self-contained file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def img_tag(src: str, alt: str) -> str:
    """An ``<img>`` of ``src`` (a data URL) with escaped alternative text."""
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; every cell escaped, floats to 4 decimals, None as empty."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(cell: object) -> str:
    """A table cell's text: floats to 4 decimals, None as empty."""
    if isinstance(cell, float):
        return f"{cell:.4f}"
    return "" if cell is None else str(cell)


def ci(entry: dict[str, Any] | float | None) -> str:
    """``0.812 (0.701–0.904)``: a figure with its 95 % interval (plain floats as they are)."""
    v = value(entry)
    if v is None:
        return "n/a"
    if isinstance(entry, dict) and entry.get("ci_low") is not None:
        return f"{v:.3f} ({entry['ci_low']:.3f}–{entry['ci_high']:.3f})"
    return f"{v:.3f}"
