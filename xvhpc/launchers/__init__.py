"""Old home of the launchers, now ``xvhpc/backends/<name>/launcher.py`` (see
``backends/base.py``). Kept importable until scripts/gen_docs.py (``LAUNCHERS``) moves (issue 21)."""

from ..backends.base import LAUNCHERS

__all__ = ["LAUNCHERS"]
