"""Experiment specs and site configs: schema, YAML with line numbers, error messages."""

from .errors import Problem, SpecError
from .load import (
    LoadedSpec,
    check_against_site,
    load_site,
    load_spec,
    point_spec,
    site_advice,
    spec_hash,
    sweep_points,
)
from .schema import ARCHITECTURES, ExperimentSpec
from .site import SiteConfig, known_sites

__all__ = [
    "ARCHITECTURES",
    "ExperimentSpec",
    "LoadedSpec",
    "Problem",
    "SiteConfig",
    "SpecError",
    "check_against_site",
    "known_sites",
    "load_site",
    "load_spec",
    "point_spec",
    "site_advice",
    "spec_hash",
    "sweep_points",
]
