"""Old home of the job environments, now in ``xvhpc/backends/<name>/environment.py`` and asked
through ``runtime/whoami.py``. Kept importable until these importers move (issue 21):
tests/test_train.py, tests/test_cv.py, tests/test_sweeps.py."""

from ..backends.base import DistInfo, EnvironmentError_
from ..backends.lsf.environment import JsrunEnvironment
from .whoami import DETECTION_ORDER, detect_environment

__all__ = [
    "DETECTION_ORDER",
    "DistInfo",
    "EnvironmentError_",
    "JsrunEnvironment",
    "detect_environment",
]
