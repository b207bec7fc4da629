"""A classifier's predictions as review items: a Label Studio ``choices`` result per image and
a whole-image COCO label, with how unsure the model was (torch-free: reads predictions.csv).

Uncertainty is least confidence, ``1 - max p`` (ties broken by the margin between the two most
likely classes, smaller first): the images a reviewer's label teaches the model most.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...data.labelstudio import TO_NAME, Review

FROM_NAME = "choice"  # <Choices name="choice" toName="image"> in the labelling config


def reviews(
    predictions: Path, files: dict[str, str], classes: list[str]
) -> tuple[list[Review], int]:
    """(a review per predicted image in input order, the number of skipped rows)."""
    rows = list(csv.reader(io.StringIO(predictions.read_text(), newline="")))
    out, skipped = [], 0
    for row in rows[1:]:
        if row[-1]:  # the reason it was skipped
            skipped += 1
            continue
        probs = [float(p) for p in row[1 : 1 + len(classes)]]
        top = sorted(probs, reverse=True)
        margin = top[0] - (top[1] if len(top) > 1 else 0.0)
        label = row[-2]
        result = [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        score = max(probs)
        out.append(
            Review(
                row[0],
                score,
                round(1 - score + 1e-3 * (1 - margin), 9),
                result,
                [{"label": label, "score": round(score, 6)}],
                extra={"margin": round(margin, 6)},
            )
        )
    return out, skipped
