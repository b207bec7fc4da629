"""The module fixtures the end-to-end tests share with the unit tests of the same package (one
definition each, beside its unit tests): a detection dataset, a predict folder and its local run,
an ingested classification run."""

from tests.unit.pipeline.test_predict import images, local_run
from tests.unit.pipeline.test_train import ingested
from tests.unit.tasks.detect.test_detect import shapes

__all__ = ["images", "ingested", "local_run", "shapes"]
