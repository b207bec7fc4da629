"""The run-directory layout: every path inside a run dir, and the exit codes steps share.

One module names them so the login side (render, submit, status) and the compute side (steps,
serve) agree without importing each other. Torch-free and scheduler-free on purpose: every
training rank imports it.

    RUN_DIR/
      plan.json  spec.yaml  site.json  jobs.json    compiled plan, spec copy, site, submitted job ids
      scripts/<step><suffix>  scripts/submit.sh      job scripts
      logs/                                          scheduler and local logs
      manifest.json  shards/<name>.h5 (+ .json)      ingest output
      train/<point>/ checkpoint.pt progress.json metrics.jsonl model/ ranks/rank-<r>.json
      train/requeues-<point>                         requeue counter (written by the job script)
      train/requeue-<point>                          "checkpointed, requeue me" (rank 0, after the
                                                     checkpoint; the job script reads and removes it)
      eval/<point>/metrics.json predictions.csv      eval/leaderboard.json
      eval/<point>/samples/<n>.png predictions.jsonl a detector's drawn images and boxes
      eval/cv-<config>/metrics.json predictions.csv  a sweep point's pooled folds
      model/ meta.json weights.pt decision.json      the published model bundle (BundleFiles)
      report.html  export/
      locks/<name>.lock                              who writes what now (xvhpc/lock.py)
      sweep/study.journal                            Optuna study of a tpe/random-with-trials sweep
      train/<point>/tensorboard/ trial.json          TensorBoard event files; a study slot's trial

    OUT/ (xvhpc predict; rundir.records.PredictLayout)
      predict.json  chunks/  predictions<suffix>  summary.json  heatmaps/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REQUEUE_EXIT = 75  # EX_TEMPFAIL: the step checkpointed and asks to be requeued
# set by cluster job scripts: ranks then exit 0 after a requeue checkpoint and the script reads
# the marker, because a launcher may not pass 75 through (srun --kill-on-bad-exit: 137)
REQUEUE_MARKER_ENV = "XVHPC_REQUEUE_MARKER"
WORKER_LOST_EXIT = 4  # ingest: a worker process was killed (complete shards kept)
BUSY_EXIT = 5  # another xvhpc process holds a lock this step needs (xvhpc/lock.py)

PLAN = "plan.json"
SPEC = "spec.yaml"
SITE = "site.json"
JOBS = "jobs.json"
MANIFEST = "manifest.json"
REPORT = "report.html"
SCRIPTS = "scripts"
LOGS = "logs"
LOCKS = "locks"
SHARDS = "shards"
TRAIN = "train"
EVAL = "eval"
MODEL = "model"
EXPORT = "export"
LEADERBOARD = "leaderboard.json"
SWEEP = "sweep"
STUDY_JOURNAL = "study.journal"
HEARTBEATS = "heartbeats"
TENSORBOARD = "tensorboard"
TRIAL = "trial.json"
CHECKPOINT = "checkpoint.pt"
PROGRESS = "progress.json"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
BUNDLE_META = "meta.json"
BUNDLE_WEIGHTS = "weights.pt"
DECISION = "decision.json"  # a bundle's decision rule (stats/decision.py writes and reads it)
PREDICTIONS = "predictions.csv"  # a classifier's scored predictions, eval/<point>/ and cv-<c>/
POOLED_PREFIX = "cv-"  # eval/cv-<config>/: one sweep point's folds pooled
RANKS = "ranks"
EVAL_SAMPLES = "samples"  # eval/<point>/samples/<n>.png: a detector's drawn validation images
# the predict OUT directory (rundir.records.PredictLayout)
PREDICT_JOB = "predict.json"
CHUNKS = "chunks"
PREDICTIONS_STEM = "predictions"  # OUT/predictions<suffix>: the task's TaskInfo.predictions_suffix
SUMMARY = "summary.json"
HEATMAPS = "heatmaps"


def requeue_counter_shell(index_var: str = "XVHPC_INDEX") -> str:
    """The requeue counter's path as the job script spells it (``$RUN_DIR`` is the run dir)."""
    return f'"$RUN_DIR/{TRAIN}/requeues-${{{index_var}}}"'


def requeue_marker_shell(index_var: str = "XVHPC_INDEX") -> str:
    """The requeue marker's path as the job script spells it."""
    return f'"$RUN_DIR/{TRAIN}/requeue-${{{index_var}}}"'


@dataclass(frozen=True)
class BundleFiles:
    """The files of one model bundle directory (RUN_DIR/model or train/<point>/model): pure path
    arithmetic, so torch-free readers (status, predict's login side) name them as train does."""

    path: Path

    @property
    def meta(self) -> Path:
        return self.path / BUNDLE_META

    @property
    def weights(self) -> Path:
        return self.path / BUNDLE_WEIGHTS

    @property
    def decision(self) -> Path:
        return self.path / DECISION

    def exists(self) -> bool:
        """Whether a bundle was written here (its meta.json is what every loader reads first)."""
        return self.meta.is_file()


@dataclass(frozen=True)
class Layout:
    """Paths of one run directory; pure path arithmetic, nothing is read or created."""

    root: Path

    @property
    def plan(self) -> Path:
        return self.root / PLAN

    @property
    def spec(self) -> Path:
        return self.root / SPEC

    @property
    def site(self) -> Path:
        return self.root / SITE

    @property
    def jobs(self) -> Path:
        return self.root / JOBS

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def scripts(self) -> Path:
        return self.root / SCRIPTS

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def export(self) -> Path:
        return self.root / EXPORT

    @property
    def leaderboard(self) -> Path:
        return self.root / EVAL / LEADERBOARD

    @property
    def study_journal(self) -> Path:
        return self.root / SWEEP / STUDY_JOURNAL

    def heartbeat(self, trial: int) -> Path:
        """A study trial's heartbeat (sweeps/heartbeat.py): who trains it, when they last said so."""
        return self.root / SWEEP / HEARTBEATS / f"trial-{trial}.json"

    def tensorboard(self, point: int) -> Path:
        return self.train_dir(point) / TENSORBOARD

    def trial(self, point: int) -> Path:
        """The study trial a slot trains (number and parameters; written by its rank 0)."""
        return self.train_dir(point) / TRIAL

    def script(self, step: str, suffix: str) -> Path:
        return self.scripts / f"{step}{suffix}"

    def train_dir(self, point: int) -> Path:
        return self.root / TRAIN / str(point)

    def checkpoint(self, point: int) -> Path:
        return self.train_dir(point) / CHECKPOINT

    def progress(self, point: int) -> Path:
        return self.train_dir(point) / PROGRESS

    def metrics_log(self, point: int) -> Path:
        return self.train_dir(point) / METRICS_LOG

    def point_model(self, point: int) -> Path:
        return self.train_dir(point) / MODEL

    def bundle(self, point: int | None = None) -> BundleFiles:
        """The files of the published bundle (``point`` None) or of one point's bundle."""
        return BundleFiles(self.model if point is None else self.point_model(point))

    def ranks(self, point: int) -> Path:
        return self.train_dir(point) / RANKS

    def rank_summary(self, point: int, rank: int) -> Path:
        return self.ranks(point) / f"rank-{rank}.json"

    def requeue_counter(self, point: int) -> Path:
        return self.root / TRAIN / f"requeues-{point}"

    def requeue_marker(self, point: int) -> Path:
        return self.root / TRAIN / f"requeue-{point}"

    def eval_dir(self, point: int) -> Path:
        return self.root / EVAL / str(point)

    def eval_metrics(self, point: int) -> Path:
        return self.eval_dir(point) / METRICS

    def eval_samples(self, point: int) -> Path:
        """eval/<point>/samples/: drawn validation images (metrics.json lists them relative to
        eval/<point>/, as ``samples/<n>.png``)."""
        return self.eval_dir(point) / EVAL_SAMPLES

    def pooled_dir(self, config: int) -> Path:
        """eval/cv-<config>/: the pooled predictions.csv and metrics.json of one sweep point."""
        return self.root / EVAL / f"{POOLED_PREFIX}{config}"

    def pooled_metrics(self, config: int) -> Path:
        return self.pooled_dir(config) / METRICS

    def export_file(self, suffix: str) -> Path:
        """``xvhpc export``'s default target: export/model<suffix>."""
        return self.export / f"{MODEL}{suffix}"

    @property
    def triton(self) -> Path:
        """``xvhpc export --format triton``'s default model repository."""
        return self.export / "triton"

    def lock(self, name: str) -> Path:
        """A lock file: ``run``, ``ingest``, ``shard-00003``, ``merge``, ``train-0``."""
        return self.root / LOCKS / f"{name}.lock"

    def local_log(self, step: str) -> Path:
        return self.logs / f"{step}-local.out"

    def requeues(self, point: int) -> int:
        """How often the job script requeued ``point`` (0 when never, or unreadable)."""
        try:
            return int(self.requeue_counter(point).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
