"""The repository stands on its own: no machine paths, no pointers outside it, no comments
about the issue tracker in the code or the docs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = (".py", ".md", ".toml", ".sql", ".yaml", ".yml", ".sh", ".json")
# A path on the machine that wrote it, a sibling folder of the checkout, an issue number.
FORBIDDEN = {
    "machine path": re.compile(r"(?<![\w.])/(work|home|Users|tmp/garda)/\w"),
    "a folder outside the repository": re.compile(r"\.\./shared\b|\bshared/(design|domain)"),
    "the issue tracker": re.compile(r"\bissues? #?\d+\b", re.IGNORECASE),
}


def _tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [REPO / p for p in out.splitlines() if p.endswith(CHECKED)]


def test_no_file_points_outside_the_repository_or_at_the_tracker() -> None:
    found = []
    for path in _tracked():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for what, rx in FORBIDDEN.items():
                if rx.search(line):
                    found.append(f"{path.relative_to(REPO)}:{n}: {what}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_patterns_catch_what_they_are_meant_to() -> None:
    assert FORBIDDEN["machine path"].search("see /work/shared/design.md")
    assert FORBIDDEN["a folder outside the repository"].search("[design](../shared/design.md)")
    assert FORBIDDEN["the issue tracker"].search("# flag it (issue 4: suspected)")
    assert not FORBIDDEN["machine path"].search("GET /api/workers/W-1")
    assert not FORBIDDEN["the issue tracker"].search("the issuer of the token")
