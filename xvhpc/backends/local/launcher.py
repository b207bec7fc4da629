"""No launcher: run the command once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import LAUNCHERS, Launcher

if TYPE_CHECKING:
    from ...plan.step import Step
    from ...spec import SiteConfig


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        return argv
