"""Old home of the schedulers, now ``xvhpc/backends/<name>/scheduler.py`` (see
``backends/base.py``). Kept importable until these importers move (issue 21): xvhpc/cli.py
(``availability``), xvhpc/spec/load.py (``get_scheduler``), scripts/gen_docs.py
(``SCHEDULERS``)."""

from ..backends.base import SCHEDULERS, availability, get_scheduler

__all__ = ["SCHEDULERS", "availability", "get_scheduler"]
