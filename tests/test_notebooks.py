"""The committed reference notebooks are in sync with the chapter sources and fully executed.

nbval runs the code stored in the .ipynb, not the chapter source: a stale notebook would pass
silently, and a never-executed cell is never compared. These tests close both holes.
"""

from __future__ import annotations

import jupytext
import nbformat
import pytest
from regenerate import chapters, executable, reference_path

CHAPTERS = list(chapters())


def test_every_chapter_in_the_toc_exists():
    missing = [str(s) for s in CHAPTERS if not s.exists()]
    assert not missing, f"chapters listed in _toc.yml but missing: {missing}"


@pytest.mark.parametrize("source", [s for s in CHAPTERS if s.exists() and executable(s)], ids=lambda s: s.stem)
def test_reference_notebook_matches_source(source):
    reference = reference_path(source)
    assert reference.exists(), f"{reference.name} is missing: run `make notebooks`"
    expected = jupytext.read(source).cells
    stored = nbformat.read(reference, as_version=4).cells
    assert [(c.cell_type, c.source) for c in stored] == [(c.cell_type, c.source) for c in expected], (
        f"{reference.name} is stale: its cells differ from {source.name}; run `make notebooks`"
    )
    unexecuted = [i for i, c in enumerate(stored) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted, f"{reference.name}: code cells {unexecuted} were never executed"
    errors = [
        i
        for i, c in enumerate(stored)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{reference.name}: code cells {errors} raised"
    # A warning or a traceback printed while rendering a figure is not an "error" output.
    stderr = [
        i
        for i, c in enumerate(stored)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("name") == "stderr"
    ]
    assert not stderr, f"{reference.name}: code cells {stderr} wrote to stderr (a warning or traceback)"
