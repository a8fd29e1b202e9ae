"""Regenerate the committed reference notebooks from the chapter sources (one way only).

The MyST Markdown chapter ``book/NAME.md`` is the only source of inputs. Its reference notebook
``book/NAME.ipynb`` is written by: reading the chapter with jupytext, executing it with nbclient
(in the chapter's folder, no per-cell timings so that diffs show only real changes), and writing
it. nbval then compares fresh executions against these outputs.

Usage: python tests/regenerate.py [book/01_teacher.md ...]   (default: every chapter in _toc.yml)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def chapters() -> list[Path]:
    """Chapter sources in reading order, read from _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for entry in toc.get("chapters", [])]
    return [ROOT / f"{name}.md" for name in files]


def reference_path(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def executable(source: Path) -> bool:
    """True if the chapter has code cells (pure-text pages have no reference notebook)."""
    notebook = jupytext.read(source)
    return any(cell.cell_type == "code" for cell in notebook.cells)


def regenerate(source: Path, timeout: int = 1200) -> float:
    notebook = jupytext.read(source)
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i}"  # stable ids: a regeneration's diff shows only real changes
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(source.parent)}},
    ).execute()
    nbformat.write(notebook, reference_path(source))
    return time.perf_counter() - start


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
    for source in sources:
        seconds = regenerate(source)
        print(f"{source.relative_to(ROOT)} -> {reference_path(source).name}: executed in {seconds:.1f} s")
        if source.stem == "00_intro":
            save_cover_picture(reference_path(source), ROOT / "book" / "_static" / "staircase.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
