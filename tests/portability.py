"""Portability check: re-execute chapters under perturbations that stand in for another machine.

A pinned number must survive another machine. This machine can imitate another's arithmetic in
three ways, each applied to a whole execution of the chapters (``tests/execute.py``, with a fresh
results cache, so nothing computed unperturbed is reused):

- ``ulp``: every initial student moved by one float ulp (``COMPANION_PERTURB=ulp``, read where the
  package draws its starts; see ``companion/_perturb.py``);
- ``avx2``: XLA limited to AVX2 code (``XLA_FLAGS=--xla_cpu_max_isa=AVX2``: other vector widths,
  other reduction orders and fused multiply-adds);
- ``threads``: every core for every kernel (``tests/execute.py --no-pin``). ``make test`` and
  ``make notebooks`` give each of the two chapters running at a time a core of its own, so XLA
  runs one thread per kernel; a reader's Jupyter kernel sees every core, and XLA splits and
  reduces its work differently.

Each perturbed execution is compared with the committed reference notebooks under the nbval
sanitizer (``tests/outputs.py``): a printed value that moves is a pin that another machine can
break. The report also counts the cells whose raw (unsanitized) text moved, which shows how much
margin the printed digits keep. The last result is written with provenance to
``book/results/portability.json``.

Usage: python tests/portability.py [--only ulp,avx2,threads] [book/NAME.md ...]
(exit 1 when any printed value moved)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from execute import ROOT, chapters, executable
from outputs import compare_notebooks

#: name -> (environment, command prefix, extra arguments of tests/execute.py)
PERTURBATIONS: dict[str, tuple[dict[str, str], list[str], list[str]]] = {
    "ulp": ({"COMPANION_PERTURB": "ulp"}, [], []),
    "avx2": ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}, [], []),
    "threads": ({}, [], ["--no-pin"]),
}
OUT = ROOT / "_build" / "portability"
RESULT = ROOT / "book" / "results" / "portability.json"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_perturbed(name: str, sources: list[Path]) -> dict:
    """Execute ``sources`` under one perturbation; returns its record for the report."""
    env_extra, prefix, extra = PERTURBATIONS[name]
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, **env_extra, "COMPANION_CACHE": str(folder / "cache")}
    executor = [sys.executable, str(ROOT / "tests" / "execute.py"), "--out", str(folder), *extra]
    command = [*prefix, *executor, *map(str, sources)]
    start = time.perf_counter()
    executed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    record: dict = {
        "environment": env_extra,
        "prefix": prefix,
        "executor_arguments": extra,
        "wall_seconds": round(wall, 1),
        "chapters": {},
    }
    if executed.returncode != 0:
        record["execution_error"] = executed.stdout[-4000:] + executed.stderr[-4000:]
    for source in sources:
        notebook = folder / f"{source.stem}.ipynb"
        if not notebook.exists():
            record["chapters"][source.stem] = {"executed": False}
            continue
        reference = ROOT / "book" / f"{source.stem}.ipynb"
        moved = compare_notebooks(reference, notebook)
        raw = compare_notebooks(reference, notebook, patterns=[])
        record["chapters"][source.stem] = {
            "executed": True,
            "moved": [{"cell": m.cell, "key": m.key, "reference": m.reference, "perturbed": m.executed} for m in moved],
            "raw_cells_changed": sorted({m.cell for m in raw}),
        }
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, help="chapter sources (default: every chapter)")
    parser.add_argument("--only", default=",".join(PERTURBATIONS), help="perturbations, comma-separated")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        parser.error(f"--only must name perturbations among {', '.join(PERTURBATIONS)}, got {', '.join(unknown)}")
    sources = [s.resolve() for s in args.sources] or [s for s in chapters() if executable(s)]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    commit, dirty = _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    report: dict = {
        "command": "python tests/portability.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": commit,
        "dirty": dirty,
        "started": started,
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "system": f"{platform.system()} {platform.release()}"},
        "python": platform.python_version(),
        "perturbations": {},
    }
    try:
        import jax

        report["jax"] = {"version": jax.__version__, "backend": jax.default_backend()}
    except ImportError:  # pragma: no cover - jax is a dependency
        pass
    failed = False
    for name in names:
        record = run_perturbed(name, sources)
        report["perturbations"][name] = record
        moved = {ch: r["moved"] for ch, r in record["chapters"].items() if r.get("moved")}
        unexecuted = [ch for ch, r in record["chapters"].items() if not r["executed"]]
        failed |= bool(moved or unexecuted)
        print(f"{name}: {record['wall_seconds']:.0f} s; ", end="")
        print(
            f"{sum(len(v) for v in moved.values())} printed values moved"
            + (f" (in {', '.join(moved)})" if moved else "")
        )
        for chapter, mismatches in moved.items():
            for m in mismatches:
                print(f"  {chapter} cell {m['cell']} [{m['key']}]:\n    - {m['reference']!r}\n    + {m['perturbed']!r}")
        if unexecuted:
            print(f"  not executed: {', '.join(unexecuted)}\n{record.get('execution_error', '')}")
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["passed"] = not failed
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"report: {RESULT.relative_to(ROOT)} ({'passed' if not failed else 'FAILED'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
