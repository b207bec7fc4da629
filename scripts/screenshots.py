"""Write the README's screenshots (docs/img/ui-dashboard.png, ui-run.png, tryit.png): the
browser tests of tests/e2e/test_ui_browser.py, run with XVHPC_SCREENSHOTS=docs/img, so every
picture is of a real run in a real browser. Usage: .venv/bin/python scripts/screenshots.py"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    env = {**os.environ, "XVHPC_SCREENSHOTS": str(ROOT / "docs" / "img"), "OMP_NUM_THREADS": "1"}
    test = ROOT / "tests" / "e2e" / "test_ui_browser.py"
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", str(test)], cwd=ROOT, env=env))
