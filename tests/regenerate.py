"""Regenerate the committed reference notebooks from the chapter sources (one way only).

The MyST Markdown chapter ``book/NAME.md`` is the only source of inputs. Its reference notebook
``book/NAME.ipynb`` is written by executing the chapter with ``tests/execute.py`` (jupytext read,
nbclient in the chapter's folder, no per-cell timings, chapters two at a time) and copying the
executed notebook into place. ``make test`` then compares a fresh execution with these outputs
(``tests/outputs.py``, nbval's rules).

Usage: python tests/regenerate.py [book/01_teacher.md ...]   (default: every chapter in _toc.yml)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
from execute import COMMITTED_SECONDS, ROOT, TIMINGS, chapters, executable
from execute import main as execute_main

__all__ = ["chapters", "executable", "reference_path", "main"]
OUT = ROOT / "_build" / "regenerated"


def reference_path(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def save_cover_picture(notebook_path: Path, target: Path) -> None:
    """The first figure of a reference notebook, saved as a PNG (the README's picture)."""
    import base64

    for cell in nbformat.read(notebook_path, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                target.write_bytes(base64.b64decode(data["image/png"]))
                return


def main(argv: list[str]) -> int:
    sources = [Path(a).resolve() for a in argv] or [s for s in chapters() if executable(s)]
    status = execute_main(["--out", str(OUT), *map(str, sources)])
    measured = json.loads((OUT / TIMINGS).read_text())["chapters"] if (OUT / TIMINGS).exists() else {}
    committed = json.loads(COMMITTED_SECONDS.read_text()) if COMMITTED_SECONDS.exists() else {}
    ran = {s.stem: round(measured[s.stem]) for s in sources if s.stem in measured}
    COMMITTED_SECONDS.write_text(json.dumps({**committed, **ran}, indent=1, sort_keys=True) + "\n")
    for source in sources:
        executed = OUT / f"{source.stem}.ipynb"
        if not executed.exists():
            continue
        shutil.copyfile(executed, reference_path(source))
        print(f"{source.relative_to(ROOT)} -> {reference_path(source).name}")
        if source.stem == "00_intro":
            save_cover_picture(reference_path(source), ROOT / "book" / "_static" / "staircase.png")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
