"""An opened run directory: its plan and spec, and one point's spec. What every step (and
each task's evaluate and report hooks) reads first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..spec import ExperimentSpec, LoadedSpec, load_spec, point_spec
from ..util import read_json
from . import Layout


@dataclass
class RunDir:
    root: Path
    plan: dict
    loaded: LoadedSpec

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        layout = Layout(Path(path).resolve())
        plan = read_json(layout.plan)
        if plan is None:
            raise SystemExit(
                f"xvhpc: error: {layout.root} is not a compiled run directory (no plan.json); "
                "run `xvhpc compile` first"
            )
        return cls(layout.root, plan, load_spec(layout.spec))

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def spec(self) -> ExperimentSpec:
        return self.loaded.spec

    def point(self, index: int) -> ExperimentSpec:
        points = self.plan["points"]
        if not 0 <= index < len(points):
            raise SystemExit(
                f"xvhpc: error: point {index} out of range (this run has {len(points)})"
            )
        return point_spec(self.loaded, points[index])

    @property
    def shard_dir(self) -> Path:
        return self.layout.shards
