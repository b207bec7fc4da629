"""One process, no launcher: rank 0 of a world of 1 (always matches, so it is listed last)."""

from __future__ import annotations

from collections.abc import Mapping

from ..base import DistInfo, JobEnvironment


class SingleProcessEnvironment(JobEnvironment):
    name = "single"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return True

    def info(self, env: Mapping[str, str]) -> DistInfo:
        return DistInfo(self.name, 0, 0, 1, "127.0.0.1", 0)
