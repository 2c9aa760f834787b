"""Rewrite the committed JSON Schemas: ``python -m schemas.generate [--check]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.types import json_schema, list_types

SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def render(type_: str) -> str:
    """The exact committed text of the schema of ``type_``."""
    return json.dumps(json_schema(type_), indent=2, ensure_ascii=False) + "\n"


def generate(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write one ``<type>.json`` per event type into ``directory``; remove stale ones."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for type_ in list_types():
        path = directory / f"{type_}.json"
        path.write_text(render(type_), encoding="utf-8")
        written.append(path)
    for stale in set(directory.glob("*.json")) - set(written):
        stale.unlink()
    return written


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that differ from the generated text, are missing or extra."""
    expected = {f"{t}.json": render(t) for t in list_types()}
    present = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.json")}
    return sorted(
        name for name in expected.keys() | present.keys() if expected.get(name) != present.get(name)
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        stale = stale_files()
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale else 0
    for path in generate():
        print(path.relative_to(SCHEMA_DIR.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
