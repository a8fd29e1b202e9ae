"""Compare executed chapters with the committed reference notebooks, exactly as nbval would.

``make test`` executes each chapter once (``tests/execute.py``), renders those outputs in the
book, and then compares them here with ``book/NAME.ipynb``: the same rules as
``pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg`` (nbval's own marker, stream and
sanitizer functions are used), without executing the chapter a second time.

- every code cell is compared unless marked ``# NBVAL_IGNORE_OUTPUT`` / ``nbval-ignore-output``
  (or skipped); streams of one name are coalesced; ``metadata``, ``execution_count``, PNG and JPEG
  data are not compared; every other MIME type is, after the sanitizer's regexes;
- a reference cell that was never executed is not compared (``tests/test_notebooks.py`` refuses
  such references), and an executed cell that raised fails.

Usage: python tests/outputs.py EXECUTED_DIR [NAME ...]  (exit 1 and a report if any cell differs)
"""

from __future__ import annotations

import difflib
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbval.plugin import (
    coalesce_streams,
    find_comment_markers,
    find_metadata_tags,
    get_sanitize_patterns,
    transform_streams_for_comparison,
)

ROOT = Path(__file__).resolve().parents[1]
SANITIZER = ROOT / "tests" / "nbval_sanitize.cfg"
# nbval's skip list (without --nbdime): these keys are never compared.
SKIP_COMPARE = (
    "metadata",
    "traceback",
    "prompt_number",
    "output_type",
    "name",
    "execution_count",
    "application/vnd.jupyter.widget-view+json",
    "image/png",
    "image/jpeg",
)


@dataclass(frozen=True)
class Mismatch:
    """One code cell whose sanitized outputs differ from the reference's."""

    cell: int  # index among the notebook's code cells, as nbval numbers them
    key: str
    reference: str
    executed: str

    def __str__(self) -> str:
        diff = difflib.unified_diff(
            str(self.reference).splitlines(), str(self.executed).splitlines(), "reference", "executed", lineterm=""
        )
        return f"Cell {self.cell}, '{self.key}':\n" + "\n".join(diff)


def sanitize_patterns(path: Path = SANITIZER) -> list[tuple[str, str]]:
    """The sanitizer's (regex, replacement) pairs, read as nbval reads them."""
    return get_sanitize_patterns(path.read_text())


def _sanitize(value: object, patterns: list[tuple[str, str]]) -> object:
    if not isinstance(value, str):
        return value
    for regex, replace in patterns:
        value = re.sub(regex, replace, value)
    return value


def _flatten(outputs: list, patterns: list[tuple[str, str]]) -> dict[str, list]:
    """nbval's comparison form: every non-skipped key (MIME types flattened) → its sanitized values."""
    flat: dict[str, list] = defaultdict(list)
    for output in transform_streams_for_comparison(coalesce_streams(outputs)):
        for key, value in output.items():
            if key in SKIP_COMPARE:
                continue
            if key == "data":
                for mime, data in value.items():
                    if mime not in SKIP_COMPARE:
                        flat[mime].append(_sanitize(data, patterns))
            else:
                flat[key].append(_sanitize(value, patterns))
    return flat


def checked(cell: nbformat.NotebookNode) -> bool:
    """Whether nbval compares this cell's outputs (markers in comments override tags)."""
    options = defaultdict(bool, find_metadata_tags(cell.metadata))
    options.update(dict(find_comment_markers(cell.source)))
    options.setdefault("check", True)
    return bool(options["check"]) and not options["skip"] and cell.execution_count is not None


def compare_notebooks(reference: Path, executed: Path, patterns: list[tuple[str, str]] | None = None) -> list[Mismatch]:
    """Every code cell of ``executed`` whose outputs differ from ``reference``'s under the sanitizer."""
    patterns = sanitize_patterns() if patterns is None else patterns
    ref_cells = [c for c in nbformat.read(reference, as_version=4).cells if c.cell_type == "code"]
    run_cells = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
    if [c.source for c in ref_cells] != [c.source for c in run_cells]:
        return [Mismatch(-1, "source", "the reference's code cells", "differ from the executed chapter's")]
    mismatches = []
    for i, (ref, run) in enumerate(zip(ref_cells, run_cells, strict=True)):
        errors = [o for o in run.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            mismatches.append(Mismatch(i, "error", "", "\n".join(errors[0].get("traceback", []))))
            continue
        if not checked(ref):
            continue
        want, got = _flatten(ref.outputs, patterns), _flatten(run.outputs, patterns)
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                mismatches.append(
                    Mismatch(i, key, "\n".join(map(str, want.get(key, []))), "\n".join(map(str, got.get(key, []))))
                )
    return mismatches


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    executed_dir, names = Path(argv[0]), argv[1:]
    names = names or sorted(p.stem for p in executed_dir.glob("*.ipynb"))
    failed = 0
    for name in names:
        mismatches = compare_notebooks(ROOT / "book" / f"{name}.ipynb", executed_dir / f"{name}.ipynb")
        print(f"{name}: {'ok' if not mismatches else f'{len(mismatches)} cells differ'}")
        for mismatch in mismatches:
            print(f"  {mismatch}")
        failed += bool(mismatches)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
