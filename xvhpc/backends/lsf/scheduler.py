"""LSF's two dialects register on import: ``lsf`` (CSM, Summit: whole nodes, jsrun) and
``lsf-classic`` (slots and span[ptile]; OpenLava runs it for real)."""

from ..base import SCHEDULERS
from . import classic, csm  # noqa: F401

__all__ = ["SCHEDULERS"]
