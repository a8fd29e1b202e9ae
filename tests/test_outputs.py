"""The book's executed chapters print what the committed reference notebooks print (nbval's rules).

``make test`` executes every chapter once (``tests/execute.py``, into ``_build/executed``), the
strict build renders those outputs, and these tests compare them with ``book/NAME.ipynb`` under
the nbval sanitizer. They read the executed notebooks from ``$COMPANION_EXECUTED`` and skip,
saying so, when it is unset (``pytest tests`` alone executes no chapter).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from execute import chapters, executable
from outputs import compare_notebooks, sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = os.environ.get("COMPANION_EXECUTED")
NAMES = [s.stem for s in chapters() if s.exists() and executable(s)]
needs_build = pytest.mark.skipif(not EXECUTED, reason="no executed book: set COMPANION_EXECUTED (make test does)")


@needs_build
@pytest.mark.parametrize("name", NAMES)
def test_executed_chapter_prints_the_reference_outputs(name):
    executed = Path(EXECUTED) / f"{name}.ipynb"
    assert executed.exists(), f"{name} was not executed into {EXECUTED}"
    mismatches = compare_notebooks(ROOT / "book" / f"{name}.ipynb", executed)
    assert not mismatches, f"{name}.ipynb: {len(mismatches)} cells differ from the reference\n" + "\n".join(
        map(str, mismatches)
    )


@needs_build
def test_the_build_executed_no_chapter_itself():
    """Every chapter the build rendered came from the executor's run: the jupyter-cache holds one
    cached notebook per chapter and no project record, which MyST-NB adds only when it executes."""
    from jupyter_cache import get_cache

    cache = get_cache(str(ROOT / "_build" / ".jupyter_cache"))
    assert len(cache.list_cache_records()) == len(NAMES)
    assert [r.uri for r in cache.list_project_records()] == []


def _notebook(tmp_path: Path, name: str, cells: list[tuple[str, list[dict]]]) -> Path:
    nb = nbformat.v4.new_notebook()
    for i, (source, outputs) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source)
        cell.execution_count = i + 1
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def _result(text: str, png: str = "") -> dict:
    data = {"text/plain": text} | ({"image/png": png} if png else {})
    return {"output_type": "execute_result", "execution_count": 1, "data": data, "metadata": {}}


def test_the_comparison_follows_nbvals_rules(tmp_path):
    """Differences beyond the sanitizer are caught; sanitized digits, split streams, PNGs and
    ignored cells are not — the rules ``pytest --nbval`` applies."""
    ref = _notebook(
        tmp_path,
        "ref",
        [
            ("print(x)", [_stream("loss 0.12345\n"), _stream("done\n")]),
            ("y", [_result("1.5e-03", png="AAAA")]),
            ("# NBVAL_IGNORE_OUTPUT\nz", [_stream("anything\n")]),
        ],
    )
    same = _notebook(
        tmp_path,
        "same",
        [
            ("print(x)", [_stream("loss 0.12349\ndone\n")]),
            ("y", [_result("1.5e-03", png="BBBB")]),
            ("# NBVAL_IGNORE_OUTPUT\nz", [_stream("something else\n")]),
        ],
    )
    assert compare_notebooks(ref, same) == []
    moved = _notebook(
        tmp_path,
        "moved",
        [
            ("print(x)", [_stream("loss 0.12445\ndone\n")]),
            ("y", [_result("1.6e-03")]),
            ("# NBVAL_IGNORE_OUTPUT\nz", []),
        ],
    )
    found = compare_notebooks(ref, moved)
    assert [(m.cell, m.key) for m in found] == [(0, "stdout"), (1, "text/plain")]
    assert "0.124" in str(found[0]) and "1.6e-03" in str(found[1])
    raised = _notebook(
        tmp_path,
        "raised",
        [("print(x)", [{"output_type": "error", "ename": "E", "evalue": "", "traceback": ["boom"]}])],
    )
    assert [m.key for m in compare_notebooks(_notebook(tmp_path, "one", [("print(x)", [])]), raised)] == ["error"]
    edited = _notebook(tmp_path, "edited", [("print(y)", [])])
    assert compare_notebooks(edited, same)[0].key == "source"


def test_the_sanitizer_is_read_as_nbval_reads_it():
    from outputs import _sanitize

    assert _sanitize("at 0x7f3a, 0.123456 in 2.5 s", sanitize_patterns()) == "at 0xADDRESS, 0.123 in TIME"
