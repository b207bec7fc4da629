"""The experiment spec: what a scientist writes. Pure data, no torch."""

from __future__ import annotations

import importlib.util
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..registry import DEFAULT_TASK, task_infos
from ..util import parse_walltime

# The model and task names come from the tasks (xvhpc/tasks/<name>/info.py): a new task's archs
# and name are valid here without an edit.
ARCHITECTURES = tuple(a for info in task_infos().values() for a in info.archs)
TASKS = tuple(task_infos())


class Strict(BaseModel):
    """Base: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class SplitSpec(Strict):
    validation: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    stratify: bool = True
    # group k-fold cross-validation: every image is held out once; one training point per fold
    folds: int | None = Field(None, ge=2, le=20)
    fold: int | None = Field(
        None, ge=0
    )  # the held-out fold of one training point (the plan sets it)
    # training groups kept apart to choose the checkpoint: the scored data never chooses it
    select: float = Field(0.0, ge=0, lt=1)
    final: bool = False  # a final fit on every fold's training records (the plan sets it)

    @model_validator(mode="after")
    def _fold_in_range(self) -> SplitSpec:
        if self.fold is not None and (self.folds is None or self.fold >= self.folds):
            raise ValueError(f"fold {self.fold} needs folds: N with N > {self.fold}")
        if self.final and (self.folds is None or self.fold is not None):
            raise ValueError("final needs folds: N and no fold (it trains on every fold)")
        return self


class CsvSpec(Strict):
    """How to read a CSV manifest; paths are relative to the CSV file."""

    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = None
    # Where no path column exists: a pattern over columns, glob allowed, e.g. "images/{patientid}.*"
    path_pattern: str | None = None
    label_map: dict[str, str] = Field(default_factory=dict)


class CocoSpec(Strict):
    """How to read COCO JSON for classification: one category per image."""

    image_dir: str = ""  # where file_name is relative to, itself relative to the JSON's folder
    group_field: str | None = None  # an image field naming the patient/group, e.g. patient_id


class VideoSpec(Strict):
    """How a video (MP4/AVI/MOV/MKV, ``data/video.py``) becomes frames: sampled at ``fps`` (None:
    every frame) from ``start`` to ``end`` seconds, at most ``max_frames`` of them; a video
    that runs (or says it runs) past ``max_seconds`` is refused, not read to its end."""

    fps: float | None = Field(None, gt=0, le=240)
    start: float = Field(0.0, ge=0)
    end: float | None = Field(None, gt=0)
    max_frames: int = Field(300, ge=1, le=100_000)
    max_seconds: float = Field(3600.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _window(self) -> VideoSpec:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class AugmentSpec(Strict):
    """Offline augmentation of one class, training split only."""

    copies: int | None = Field(None, ge=0, le=1000)
    target_count: int | None = Field(None, ge=1)
    hflip: bool = False
    vflip: bool = False
    rotate: list[int] = Field(default_factory=list)
    blur: float = Field(0.0, ge=0, le=20)
    sharpen: bool = False
    noise: float = Field(0.0, ge=0, le=128)
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _one_amount(self) -> AugmentSpec:
        if self.copies is None and self.target_count is None:
            raise ValueError("give copies or target_count")
        if self.copies is not None and self.target_count is not None:
            raise ValueError("give copies or target_count, not both")
        return self


class DataSpec(Strict):
    source: str
    format: Literal["auto", "folders", "csv", "coco"] = "auto"  # auto: by .csv / .json / folder
    csv: CsvSpec = Field(default_factory=CsvSpec)
    coco: CocoSpec = Field(default_factory=CocoSpec)
    image_size: int = Field(224, ge=8, le=4096)
    channels: Literal[1, 3] = 3
    resize: Literal["squash", "letterbox", "center_crop", "tile"] = "letterbox"
    tile_grid: int = Field(2, ge=1, le=8)
    # detection: a box cut by a tile or crop is kept, clipped, where at least this fraction of
    # it lies in the output image; one in no output image is listed in the manifest
    min_box_visible: float = Field(0.3, gt=0, le=1)
    split: SplitSpec = Field(default_factory=SplitSpec)
    shards: int = Field(1, ge=1, le=10000)
    augment: dict[str, AugmentSpec] = Field(default_factory=dict)
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    max_image_pixels: int = Field(200_000_000, ge=1)
    max_decode_bytes: int = Field(4 << 30, ge=1 << 20)  # peak bytes of one decode (serve: less)
    follow_links: bool = False  # read links (folders) and manifest paths leading out of the data
    dicom_frames: Literal["first", "all"] = "first"
    video: VideoSpec = Field(default_factory=VideoSpec)  # frames of MP4/AVI/MOV/MKV files
    stage: Literal["shared", "node_local"] = "shared"  # node_local: train copies shards per node
    compression: Literal["none", "gzip", "lzf"] = "none"
    leaks: Literal["report", "drop"] = "report"
    workers: int = Field(0, ge=0, le=512)


class ModelSpec(Strict):
    arch: Literal[ARCHITECTURES] = "googlenet"  # type: ignore[valid-type]
    pretrained: str = "imagenet"  # imagenet | none | a path to a state dict (detect: coco | none)
    import_: str | None = Field(None, alias="import")
    freeze_backbone: bool = False
    # a task's way of modelling (segment: semantic | instance); unset: the arch's own
    mode: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("import_")
    @classmethod
    def _import_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w]+", value):
            raise ValueError("expected 'package.module:factory'")
        return value


class EarlyStopSpec(Strict):
    """Stop one run when its validation metric has not improved for ``patience`` rounds."""

    metric: str = "val_loss"  # val_loss or one of the task's validation metrics (spec/task.py)
    patience: int = Field(5, ge=1, le=100000)  # validation rounds (every val_every iterations)


class TrainSpec(Strict):
    max_iterations: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1, le=65536)
    learning_rate: float = Field(0.001, gt=0, le=10)
    scale_lr: bool = False
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0005, ge=0, le=1)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_iterations: int = Field(0, ge=0)
    step_size: int = Field(1000, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    amp: Literal[True, False, "float16", "bfloat16"] = True  # true: float16 on GPUs only
    channels_last: bool = (
        True  # NHWC weights and batches on GPUs (tensor-core convolutions); not on CPU
    )
    seed: int = 0
    class_weights: Literal["none", "auto"] = "none"
    balanced_sampling: bool = False
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(10, ge=1)
    val_every: int = Field(200, ge=1)
    workers: int = Field(2, ge=0, le=64)
    cache_in_memory: bool = (
        False  # hold the training split in RAM (small datasets, slow filesystems)
    )
    backend: Literal["ddp", "horovod"] = "ddp"
    max_requeues: int = Field(3, ge=0, le=100)
    early_stop: EarlyStopSpec | None = None
    # cross-validation: also retrain each sweep point on all folds; the best one is deployed
    final_fit: bool = False
    # curves and parameters of every point: TensorBoard event files, an offline MLflow file store
    track: list[Literal["tensorboard", "mlflow"]] = ["tensorboard"]  # pydantic copies defaults

    @field_validator("track", mode="before")
    @classmethod
    def _track_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("track")
    @classmethod
    def _track_installed(cls, value: list[str]) -> list[str]:
        """Refused at validate time, not after a queue wait (find_spec imports nothing)."""
        if "mlflow" in value and importlib.util.find_spec("mlflow") is None:
            raise ValueError("mlflow is not installed: pip install 'xvhpc[mlflow]'")
        return value

    @model_validator(mode="after")
    def _length(self) -> TrainSpec:
        if self.max_iterations is None and self.epochs is None:
            self.max_iterations = 1000
        return self


class OperatingPointSpec(Strict):
    """The threshold on one class's probability: the lowest specificity cost reaching
    min_sensitivity, or the lowest sensitivity cost reaching min_specificity."""

    positive: str = Field(min_length=1)
    min_sensitivity: float | None = Field(None, gt=0, le=1)
    min_specificity: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_target(self) -> OperatingPointSpec:
        if (self.min_sensitivity is None) == (self.min_specificity is None):
            raise ValueError("give min_sensitivity or min_specificity (one of them)")
        return self


class EvaluateSpec(Strict):
    # one of the task's held-out metrics (TaskInfo.rank_by; spec/task.py checks it); unset: the
    # task's first (classify: accuracy, detect: map), filled in when the spec is read
    rank_by: str = ""
    heatmap_samples: int = Field(8, ge=0, le=256)
    bootstrap: int = Field(2000, ge=1000, le=100000)  # resamples for the 95 % intervals
    seed: int = 0  # of the bootstrap (and of the calibration/operating-point cross-fit halves)
    calibrate: Literal["none", "temperature"] = "none"
    operating_point: OperatingPointSpec | None = None


class ResourcesSpec(Strict):
    nodes: int = Field(1, ge=1, le=100000)
    gpus_per_node: int = Field(0, ge=0, le=64)
    processes_per_node: int | None = Field(None, ge=1, le=256)  # CPU-only runs
    cpus_per_task: int | None = Field(None, ge=1, le=1024)
    walltime: str = "01:00:00"
    ingest_walltime: str = "00:30:00"
    # evaluate scores every point (and every fold) on its held-out data; report draws the page
    evaluate_walltime: str = "00:30:00"
    report_walltime: str = "00:15:00"
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    # Slurm --qos (Perlmutter: regular, debug, preempt) and a reservation (Slurm --reservation,
    # LSF -U); unset: the site's
    qos: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    reservation: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    # one job runs ingest → train → evaluate → report (one queue wait); None: the queue decides
    single_allocation: bool | None = None
    # mail at job start/end (LSF -B -N; Slurm --mail-type)
    notify: Literal["none", "email"] = "none"

    @field_validator("walltime", "ingest_walltime", "evaluate_walltime", "report_walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        parse_walltime(value)
        return value.strip()  # parse_walltime allows spaces around; scripts get none


class PruneSpec(Strict):
    """Stop a study's poor trials early (xvhpc/sweeps): ASHA, median, or none."""

    method: Literal["asha", "median", "none"] = "asha"
    min_iterations: int | None = Field(None, ge=1)  # no pruning before this iteration


class RangeSpec(Strict):
    """A swept key's range for random or adaptive search: integers when low, high (and step)
    are all integers (Optuna's suggest_int), else floats (suggest_float); ``log`` samples the
    exponent (needs low > 0), ``step`` a grid of low, low + step, ... (not with log)."""

    low: int | float
    high: int | float
    step: int | float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("give step or log: true, not both")
        return self

    @property
    def integer(self) -> bool:
        bounds = (self.low, self.high, self.step if self.step is not None else 1)
        return all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)

    @property
    def steps(self) -> int:
        """Steps above low that stay within high (Optuna's rule: high is lowered onto the grid)."""
        return int((_decimal(self.high) - _decimal(self.low)) // _decimal(self.step or 1))

    def on_step(self, index: int) -> float:
        """low + index × step in decimal as written: 0.1 + 2 × 0.1 is 0.3, not 0.30000000000000004."""
        return float(_decimal(self.low) + _decimal(self.step or 1) * index)


def _decimal(value: float) -> Decimal:
    return Decimal(str(value))


RANGE_FORMS = "a list of choices [a, b, ...] or a range {low: L, high: H} (+ step: S or log: true)"


def _range_problems(exc: ValidationError) -> str:
    """``hi: unknown key; high: required key is missing`` for a malformed range."""
    words = {"extra_forbidden": "unknown key", "missing": "required key is missing"}
    parts = []
    for e in exc.errors():
        text = words.get(e["type"], str(e["msg"]).removeprefix("Value error, "))
        parts.append(f"{'.'.join(map(str, e['loc']))}: {text}" if e["loc"] else text)
    return "; ".join(parts)


def _choices_or_range(value: Any) -> list[Any] | RangeSpec:
    """A swept key's values: a list of choices or a range, with one message naming both forms
    (pydantic's union errors would name its internal branches instead)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        try:
            return RangeSpec.model_validate(value)
        except ValidationError as exc:
            raise ValueError(f"{_range_problems(exc)} (valid: {RANGE_FORMS})") from None
    raise ValueError(f"expected {RANGE_FORMS}")


SweepValues = Annotated[list[Any] | RangeSpec, BeforeValidator(_choices_or_range)]


class SweepSpec(Strict):
    method: Literal["grid", "random", "tpe"] = "grid"
    parameters: dict[str, SweepValues] = Field(default_factory=dict)
    samples: int = Field(4, ge=1, le=10000)
    seed: int = 0
    max_concurrent: int = Field(4, ge=1, le=10000)
    # An Optuna study (tpe, or random with trials): array slots that each ask it for a trial
    trials: int | None = Field(None, ge=1, le=10000)
    prune: PruneSpec | None = None
    # val_loss or one of the task's validation metrics (spec/task.py); None: from evaluate.rank_by
    objective: str | None = None

    @model_validator(mode="after")
    def _study(self) -> SweepSpec:
        if self.method == "tpe" and self.trials is None:
            raise ValueError("method: tpe needs trials: N (the study's array slots)")
        if self.method == "grid" and self.trials is not None:
            raise ValueError("trials: N needs method: tpe or random (a grid's points are fixed)")
        if self.trials is not None and not self.parameters:
            raise ValueError("a study (trials: N) needs parameters to search")
        if self.prune is not None and self.trials is None:
            raise ValueError("prune needs an Optuna study: method: tpe (or random) with trials: N")
        return self

    @property
    def study(self) -> bool:
        """Whether the points come from an Optuna study at run time, not from compile time."""
        return self.trials is not None


class DeploySpec(Strict):
    threshold: float = Field(0.0, ge=0, le=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_upload_mb: float = Field(32, gt=0)
    export: list[Literal["torchscript", "onnx"]] = ["torchscript"]  # pydantic copies defaults


class ExperimentSpec(Strict):
    name: str = Field(min_length=1, max_length=1000)
    task: Literal[TASKS] = DEFAULT_TASK  # type: ignore[valid-type]  # checks: spec/task.py
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    sweep: SweepSpec | None = None
    deploy: DeploySpec = Field(default_factory=DeploySpec)

    @model_validator(mode="after")
    def _task_defaults(self) -> ExperimentSpec:
        """The task's default ranking metric where the spec names none."""
        if not self.evaluate.rank_by:
            self.evaluate.rank_by = task_infos()[self.task].rank_by[0]
        return self
