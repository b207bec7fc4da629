"""Old home of the batch-task questions, now ``runtime/whoami.py`` (``detect_task`` is
``batch_task``: it is about array tasks, not ML tasks). Kept importable until these importers
move (issue 21): xvhpc/cli.py, xvhpc/steps/ingest.py, xvhpc/steps/predict.py,
tests/test_train.py."""

from .whoami import BatchTask as Task
from .whoami import array_index, launcher_rank
from .whoami import batch_task as detect_task

__all__ = ["Task", "array_index", "detect_task", "launcher_rank"]
