"""Make the desk screenshots shown in the README: ``python -m bench.screenshots [DIR]``.

Runs the browser test that drives a real worker, broker and database in headless Chromium
(``/usr/bin/chromium``) and writes queue, case and board screenshots, desktop and phone
(390 px), into DIR (default ``docs/screenshots``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "screenshots").resolve()
    env = {**os.environ, "GARDA_SCREENSHOTS": str(out)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "tests/integration/test_desk_browser.py::test_screenshots",
    ]
    code = subprocess.call(cmd, cwd=REPO, env=env)
    if code == 0:
        for path in sorted(out.glob("*.png")):
            print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
