"""Line charts as inline SVG, drawn on the server: no plotting library in the page, nothing
fetched from elsewhere, and the markup escapes every name it shows."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
WIDTH, HEIGHT, PAD = 520, 240, 40
MAX_POINTS = 400  # per series: a long run is thinned to this many points


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    step = max(1, len(points) // MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def _scale(low: float, high: float, out_low: float, out_high: float) -> Callable[[float], float]:
    span = (high - low) or 1.0
    return lambda v: out_low + (v - low) / span * (out_high - out_low)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """One chart of every series against the iteration; empty string when there is no point."""
    series = {k: _thin(v) for k, v in series.items() if v}
    if not series:
        return ""
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    sx = _scale(min(xs), max(xs), PAD, WIDTH - 10)
    sy = _scale(min(ys), max(ys), HEIGHT - PAD, 20)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<rect x="{PAD}" y="20" width="{WIDTH - PAD - 10}" height="{HEIGHT - PAD - 20}" '
        'fill="none" stroke="#ccc"/>',
        f'<text x="{PAD}" y="14" font-size="12">{escape(title)}</text>',
        f'<text x="{PAD}" y="{HEIGHT - 22}" font-size="10">{min(xs):g}</text>',
        f'<text x="{WIDTH - 10}" y="{HEIGHT - 22}" font-size="10" text-anchor="end">'
        f"{max(xs):g}</text>",
        f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" font-size="10" text-anchor="end">'
        f"{min(ys):.3g}</text>",
        f'<text x="{PAD - 4}" y="28" font-size="10" text-anchor="end">{max(ys):.3g}</text>',
        f'<text x="{WIDTH // 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">'
        "iteration</text>",
    ]
    for i, (name, points) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline class="series" data-name="{escape(name)}" fill="none" '
            f'stroke="{colour}" stroke-width="1.5" points="{path}"/>'
        )
        parts.append(
            f'<text x="{WIDTH - 14}" y="{34 + 14 * i}" font-size="11" fill="{colour}" '
            f'text-anchor="end">{escape(name)}</text>'
        )
    return "".join(parts) + "</svg>"


def run_charts(series: dict[str, list[tuple[float, float]]]) -> str:
    """The loss chart (training and validation loss) and one chart of the other validation
    figures (accuracy, mAP, Dice, … whatever the task logs)."""
    losses = {k: v for k, v in series.items() if k in ("loss", "val_loss")}
    others = {k: v for k, v in series.items() if k not in losses}
    return line_chart("loss", losses) + line_chart("validation", others)
