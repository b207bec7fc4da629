"""Spec × site → plan (pure data, ``model``) → scripts (``render``)."""

from .model import Plan, Step, build_plan

__all__ = ["Plan", "Step", "build_plan"]
