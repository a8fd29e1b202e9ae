"""Execute the book's chapters once, in parallel, for the build, the tests and the references.

Every chapter (a MyST Markdown notebook, ``book/NAME.md``) is read with jupytext and executed
with nbclient in the chapter's folder, without per-cell timings. The executed notebooks go to one
place and serve three readers, so that ``make test`` executes each chapter exactly once:

- the strict Sphinx build: ``--cache`` stores each executed notebook in the build's jupyter-cache
  under the hash MyST-NB computes from the chapter's code cells, and the build (configured with
  ``execute_notebooks: cache``) renders those outputs instead of executing the chapter again;
- the regression test: ``tests/outputs.py`` compares ``--out``'s notebooks with the committed
  reference notebooks under the nbval sanitizer (``make test``);
- the reference notebooks themselves (``make notebooks`` writes ``book/NAME.ipynb``).

Chapters run ``--jobs`` at a time (default: the number of CPU cores, at most 2), longest first
by the last measured times when ``--out`` holds them; XLA's arithmetic does not depend on how
many other processes share the machine, so the outputs equal a one-at-a-time run.

Usage: python tests/execute.py --out DIR [--cache DIR] [--jobs N] [book/01_teacher.md ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = "timings.json"
#: Each chapter's seconds when the references were last regenerated (``make notebooks`` writes it):
#: the order of a run whose ``--out`` holds no timings yet, such as a fresh clone's.
COMMITTED_SECONDS = ROOT / "tests" / "chapter_seconds.json"


def chapters() -> list[Path]:
    """Chapter sources in reading order, read from _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for entry in toc.get("chapters", [])]
    return [ROOT / f"{name}.md" for name in files]


def executable(source: Path) -> bool:
    """True if the chapter has code cells (pure-text pages have no reference notebook)."""
    notebook = jupytext.read(source)
    return any(cell.cell_type == "code" for cell in notebook.cells)


def read_chapter(source: Path) -> nbformat.NotebookNode:
    """The chapter as an unexecuted notebook, with stable cell ids and the plain Python kernel."""
    notebook = jupytext.read(source)
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i}"  # stable ids: a regeneration's diff shows only real changes
    return notebook


def _cell_seconds(notebook: nbformat.NotebookNode) -> list[float]:
    """Each code cell's execution time from nbclient's timing metadata, which is then removed."""
    from datetime import datetime

    times = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        stamps = cell.metadata.pop("execution", {})
        begin, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if begin and end:
            delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(
                begin.replace("Z", "+00:00")
            )
            times.append(round(delta.total_seconds(), 2))
        else:
            times.append(0.0)
    return times


def execute(source: Path, timeout: int = 1200) -> tuple[nbformat.NotebookNode, float, list[float]]:
    """Execute one chapter in its own folder; returns the executed notebook, its seconds and each code cell's."""
    from nbclient import NotebookClient

    notebook = read_chapter(source)
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=True,
        resources={"metadata": {"path": str(source.parent)}},
    ).execute()
    seconds = time.perf_counter() - start
    return notebook, seconds, _cell_seconds(notebook)


def _pin_worker(counter) -> None:
    """Pool initializer: give each worker (and so its kernels) one core of its own.

    Two kernels whose XLA thread pools each span both cores oversubscribe them; pinned, each
    kernel's XLA sees one core and runs one thread. The printed results do not depend on it
    (``make portability``'s ``threads`` perturbation runs them unpinned and compares).
    """
    cores = sorted(os.sched_getaffinity(0))
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.sched_setaffinity(0, {cores[index % len(cores)]})


def _run_one(source: str, out: str) -> tuple[str, float, list[float], str | None]:
    """Worker: execute, write ``out/NAME.ipynb``; returns (name, seconds, cell seconds, error or None)."""
    path = Path(source)
    target = Path(out) / f"{path.stem}.ipynb"
    target.unlink(missing_ok=True)  # a failed chapter leaves no earlier run's notebook behind
    try:
        notebook, seconds, cells = execute(path)
    except Exception:  # a failing chapter is reported by name; the others still run
        return path.stem, 0.0, [], traceback.format_exc()
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, tmp)
    tmp.replace(target)
    return path.stem, seconds, cells, None


def store_in_build_cache(executed: Path, source: Path, cache_path: Path, seconds: float) -> None:
    """Put an executed chapter into the jupyter-cache the MyST-NB build reads (``execute_notebooks: cache``).

    MyST-NB hashes the notebook it reads from the Markdown source (code cells, their metadata and
    the kernelspec); the notebook is stored under the same hash, so the build finds it. Its
    execution time goes with it, for the book's execution-statistics page.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook

    built = read_myst_markdown_notebook(source.read_text())
    ran = nbformat.read(executed, as_version=4)
    code_built = [c for c in built.cells if c.cell_type == "code"]
    code_ran = [c for c in ran.cells if c.cell_type == "code"]
    if [c.source for c in code_built] != [c.source for c in code_ran]:
        raise RuntimeError(f"{source.name}: the build's reading of the chapter differs from jupytext's")
    for target, cell in zip(code_built, code_ran, strict=True):
        target.outputs = cell.outputs
        target.execution_count = cell.execution_count
    built.metadata.update({k: v for k, v in ran.metadata.items() if k in ("kernelspec", "language_info")})
    cache = get_cache(str(cache_path))
    cache.cache_notebook_bundle(
        CacheBundleIn(built, str(source), data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, help="chapter sources (default: every chapter in _toc.yml)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the executed notebooks")
    parser.add_argument("--cache", type=Path, help="jupyter-cache folder of the build to store them in")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="chapters at a time")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not give each parallel chapter a core of its own"
    )
    args = parser.parse_args(argv)
    sources = [s.resolve() for s in args.sources] or [s for s in chapters() if executable(s)]
    args.out.mkdir(parents=True, exist_ok=True)
    timings_path = args.out / TIMINGS
    last = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    previous = last.get("chapters", {})
    hints = json.loads(COMMITTED_SECONDS.read_text()) if COMMITTED_SECONDS.exists() else {}
    # Longest first (by the last run's times, else the committed ones): the slowest chapter sets
    # the wall time, so it must not start last.
    order = sorted(sources, key=lambda s: -previous.get(s.stem, hints.get(s.stem, 0.0)))
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    cell_seconds: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    jobs = max(1, args.jobs)
    pin = jobs > 1 and args.pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= jobs
    pool_options = {"initializer": _pin_worker, "initargs": (multiprocessing.Value("i", 0),)} if pin else {}
    with ProcessPoolExecutor(max_workers=jobs, **pool_options) as pool:
        futures = [pool.submit(_run_one, str(s), str(args.out)) for s in order]
        for future in as_completed(futures):
            name, took, cells, error = future.result()
            if error is not None:
                failed[name] = error
                print(f"{name}: FAILED\n{error}", flush=True)
            else:
                seconds[name] = took
                cell_seconds[name] = cells
                print(f"{name}: executed in {took:.1f} s", flush=True)
    wall = time.perf_counter() - start
    if args.cache is not None:
        for source in sources:
            if source.stem in seconds:
                store_in_build_cache(args.out / f"{source.stem}.ipynb", source, args.cache, seconds[source.stem])
    timings = {
        "chapters": {**previous, **seconds},
        "cells": {**last.get("cells", {}), **cell_seconds},
        "wall_seconds": round(wall, 1),
        "jobs": args.jobs,
        "pinned": pin,
    }
    timings_path.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    print(f"{len(seconds)} chapters executed in {wall:.1f} s of wall time ({args.jobs} at a time)")
    if failed:
        print(f"failed: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
