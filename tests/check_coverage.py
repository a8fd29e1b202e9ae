"""Fail unless every module of the package is covered to at least the floor (default 85%).

Run after `coverage run -m pytest ...` (see the Makefile's `test` and `coverage` targets). Reads the
data file named in pyproject.toml; a module no test imported counts as 0%. `coverage report
--fail-under` checks only the total, so this checks each module. Usage:
`python tests/check_coverage.py [--floor 85] [--data-file FILE]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "companion"


def module_coverage(cov: coverage.Coverage, path: Path) -> tuple[int, int]:
    """(statements, missed) of one source file; a file never imported has every statement missed."""
    _, statements, _, missing, _ = cov.analysis2(str(path))
    return len(statements), len(missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=float, default=85.0, help="minimum percent per module (0-100)")
    parser.add_argument("--data-file", help="coverage data file (default: the one pyproject.toml names)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.floor <= 100.0:
        parser.error(f"--floor must be in [0, 100], got {args.floor}")
    # Coverage(data_file=None) means "no data file at all", not "the configured one": pass it only when given.
    options = {"data_file": args.data_file} if args.data_file else {}
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"), **options)
    cov.load()
    if not cov.get_data().measured_files():
        print("check_coverage: no coverage data; run the tests under `coverage run` first", file=sys.stderr)
        return 2
    below = []
    print(f"{'module':<28} {'stmts':>6} {'miss':>6} {'cover':>7}")
    for path in sorted(PACKAGE.glob("*.py")):
        n, missed = module_coverage(cov, path)
        if n == 0:
            continue
        percent = 100.0 * (n - missed) / n
        flag = "" if percent >= args.floor else f"  < {args.floor:g}%"
        print(f"{path.stem:<28} {n:>6} {missed:>6} {percent:>6.1f}%{flag}")
        if percent < args.floor:
            below.append(path.stem)
    if below:
        print(f"check_coverage: under {args.floor:g}%: {', '.join(below)}", file=sys.stderr)
        return 1
    print(f"check_coverage: every module at or above {args.floor:g}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
