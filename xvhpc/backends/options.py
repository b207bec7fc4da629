"""The base of a backend's site options: what ``backends/<name>/options.py`` declares and a site
sets under ``scheduler_options:`` or ``launcher_options:`` (ReFrame's ``sched_options``). Kept
out of ``base.py``, which job-side environments import: this one brings pydantic."""

from __future__ import annotations

from ..spec.schema import Strict


class Options(Strict):
    """One scheduler's or launcher's site options (unknown keys are errors; every field has a
    default, so a site that sets none gets the backend's defaults)."""
