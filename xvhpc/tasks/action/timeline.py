"""A video's timeline as a PNG (matplotlib, no torch): true segments above, predicted below,
one colour per class, the confidence written on each prediction."""

from __future__ import annotations

import io


def timeline_png(
    video: str, truth: list, found: list, classes: list[str], duration: float | None
) -> bytes:
    """True (start, end, class) and predicted (start, end, class, confidence) segments."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    colours = plt.get_cmap("tab10")
    end = max([duration or 0.0, *(t[1] for t in truth), *(f[1] for f in found), 1.0])
    fig, ax = plt.subplots(figsize=(7, 1.6), dpi=80)
    for row, (items, y) in enumerate(((truth, 1.0), (found, 0.0))):
        for item in items:
            s, e, c = float(item[0]), float(item[1]), int(item[2])
            ax.broken_barh([(s, e - s)], (y + 0.1, 0.8), color=colours(c % 10))
            text = classes[c] + (f" {item[3]:.2f}" if row else "")
            ax.text(s, y + 0.5, text, va="center", fontsize=7)
    ax.set_xlim(0, end)
    ax.set_yticks([0.5, 1.5], ["predicted", "true"])
    ax.set_xlabel("seconds")
    ax.set_title(video, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
