"""py-spy sampling of a running process, summarised as self and inclusive shares.

``Profiler(pid, out).start()`` attaches ``py-spy record`` (200 Hz, raw collapsed stacks,
every thread) to the process; ``stop()`` ends it and returns ``summarize_profile(out)``.
Without py-spy installed (``pip install -e '.[bench]'``) nothing is sampled.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import log


class Profiler:
    """py-spy record on the worker process (raw collapsed stacks), if py-spy is available."""

    def __init__(self, pid: int, out: Path | str) -> None:
        self.pid, self.out = pid, Path(out)
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.exe = exe if Path(exe).exists() else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> bool:
        if self.exe is None:
            log("py-spy not found: no profile (pip install py-spy)")
            return False
        self.proc = subprocess.Popen(
            [
                self.exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--threads",
                "--duration",
                "600",
                "--output",
                str(self.out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)  # let it attach
        return True

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        if not self.out.exists():
            log(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
            return None
        return summarize_profile(self.out)


def _frame_name(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'module.py:func'."""
    func, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{short}:{func}"


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and per thread."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith("thread") else "?"
        names = [_frame_name(f) for f in frames if not f.startswith(("thread", "process"))]
        if not names:
            continue
        total += count
        threads[thread] += count
        self_c[names[-1]] += count
        for name in set(names):
            incl[name] += count

    def share(c: Counter) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "threads_pct": share(threads),
        "self_pct": share(self_c),
        "inclusive_pct": share(incl),
        "raw_file": path.name,  # next to the results JSON
    }
