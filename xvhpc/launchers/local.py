"""No launcher: run the command once."""

from ..plan.model import Step
from ..spec import SiteConfig
from .base import LAUNCHERS, Launcher


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        return argv
