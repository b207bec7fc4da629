"""The training points of a spec: sweep points × cross-validation folds, and their grouping back
into sweep points. Pure data: the plan (login side) lays them out, and train, evaluate and
report (compute side) read the same layout, without either side importing the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loaded import LoadedSpec

FOLD_KEY = "data.split.fold"  # a point's held-out fold (cross-validation)
FINAL_KEY = "data.split.final"  # a point that refits a sweep point on every fold (final_fit)
CV_KEYS = (FOLD_KEY, FINAL_KEY)  # what the plan adds to a sweep point's parameters


def fold_points(loaded: LoadedSpec, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sweep points × folds (point-major: point p, fold k is index p × folds + k), so the folds
    run as array tasks (packed on Summit) exactly as sweep points do; with train.final_fit, one
    final fit per sweep point follows all of them (index P × folds + p)."""
    split = loaded.spec.data.split
    if not split.folds or split.fold is not None:
        return points  # (a study with folds is refused when the spec loads)
    folded = [{**p, FOLD_KEY: k} for p in points for k in range(split.folds)]
    return folded + [{**p, FINAL_KEY: True} for p in points if loaded.spec.train.final_fit]


@dataclass(frozen=True)
class CvPoint:
    """One cross-validated sweep point: its training points per held-out fold, and its final
    fit on all folds (None without train.final_fit)."""

    folds: list[int]
    final: int | None

    @property
    def deployed(self) -> int:
        """The training point whose model is published if this sweep point ranks best."""
        return self.final if self.final is not None else self.folds[0]


def cv_points(points: list[dict[str, Any]]) -> list[CvPoint]:
    """Training points grouped by sweep point, in plan order: the one mapping from plan points
    to folds and final fits (plan, train, evaluate, report). It follows ``fold_points``' layout
    (sweep point c, fold k at c × folds + k; c's final fit after all folds), never parameter
    equality: two sweep points with the same parameters stay two."""
    folded = [p for p, params in enumerate(points) if FOLD_KEY in params]
    if not folded:  # no folds: each training point is its own sweep point
        return [CvPoint([p], None) for p in range(len(points))]
    folds = max(int(points[p][FOLD_KEY]) for p in folded) + 1
    groups: list[dict[int, int]] = [{} for _ in range(len(folded) // folds)]
    for i, p in enumerate(folded):
        k = int(points[p][FOLD_KEY])
        if i // folds >= len(groups) or k in groups[i // folds]:
            raise ValueError(f"plan point {p}: fold {k} out of place in the plan's layout")
        groups[i // folds][k] = p
    finals = [p for p, params in enumerate(points) if params.get(FINAL_KEY)]
    if finals and len(finals) != len(groups):
        raise ValueError(f"{len(finals)} final fits for {len(groups)} sweep points")
    return [
        CvPoint([g[k] for k in range(folds)], finals[c] if finals else None)
        for c, g in enumerate(groups)
    ]


def is_final_fit(points: list[dict[str, Any]], point: int) -> bool:
    """Whether training point ``point`` is a final fit (no held-out data scores it)."""
    return bool(points[point].get(FINAL_KEY))
