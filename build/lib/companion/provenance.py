r"""Provenance of a committed result: which command, code, preset, machine and JAX made it, and how long it took.

A heavier run than a chapter can execute is committed as a JSON summary under ``book/results/``;
the chapter shows it beside its executed small run. This module stamps such a summary with
:func:`provenance` and writes it, and runs the experiments that have a full-summary writer::

    JAX_PLATFORMS=cpu python -m companion.provenance width_sweep --preset medium --out book/results/width_sweep_medium.json
    JAX_PLATFORMS=cpu python -m companion.provenance width_sweep --preset large --out book/results/width_sweep_large.json
    JAX_PLATFORMS=cpu python -m companion.provenance width_sweep_sgd --preset book --out book/results/width_sweep_sgd_book.json
    JAX_PLATFORMS=cpu python -m companion.provenance width_sweep_sgd --preset large --out book/results/width_sweep_sgd_large.json
    JAX_PLATFORMS=cpu python -m companion.provenance width_sweep_sgd --preset xlarge --out book/results/width_sweep_sgd_xlarge.json
    JAX_PLATFORMS=cpu python -m companion.provenance prediction_scale --preset medium --out book/results/prediction_scale.json
    JAX_PLATFORMS=cpu python -m companion.provenance unstable_lr --preset medium --out book/results/unstable_lr_medium.json

(``python -m companion reproduce NAME --preset P --out FILE`` writes the short summary of the
command line without provenance; this runner writes every array the chapter reads, with it.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """The code's commit (``git rev-parse HEAD``) and whether tracked files had uncommitted changes
    (``dirty``); None for each where git cannot tell. Taken when a run *starts*: a commit made
    while a long run goes on must not be recorded as the code that produced it."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def provenance(command: str, preset: str, wall_time_s: float, code: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of a result.

    Args:
        command: the command line that produced it (as a reader would type it).
        preset: the experiment's preset name.
        wall_time_s: wall-clock seconds the computation took (cold cache unless stated).
        code: :func:`git_state` taken when the run started (default: taken now).
    Returns:
        a JSON-able dict: command, commit (``git rev-parse HEAD`` when the run started, with ``dirty``
        when the working tree had uncommitted changes), preset, wall_time_s, finished (UTC), machine
        (platform, processor, CPU count), python, jax_backend and jax_version.
    """
    import jax

    code = git_state() if code is None else code
    return {
        "command": command,
        "commit": code["commit"],
        "dirty": code["dirty"],
        "preset": preset,
        "wall_time_s": round(float(wall_time_s), 1),
        "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "jax_version": jax.__version__,
    }


def to_jsonable(value: Any) -> Any:
    """Arrays to (nested) lists, non-finite floats to None, dataclasses to dicts, recursively."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_result(path: str | Path, summary: dict, prov: dict) -> Path:
    """Write ``{"provenance": prov, **summary}`` as JSON (non-finite numbers as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": prov, **to_jsonable(summary)}, indent=None) + "\n")
    return path


def load_result(path: str | Path) -> dict:
    """Read a committed result; lists stay lists (``np.asarray(..., float)`` turns null into nan)."""
    return json.loads(Path(path).read_text())


def _width_sweep_summary(preset: str, progress: bool) -> dict:
    from companion.experiments import run_width_sweep, width_sweep

    sweep = width_sweep(preset)
    result = run_width_sweep(sweep, progress=progress)
    return {
        "experiment": "width_sweep",
        "method": "gradient descent on the population loss",
        "sweep": sweep,
        **result._asdict(),
    }


def _width_sweep_sgd_summary(preset: str, progress: bool) -> dict:
    from companion.frontier import reproduce_width_sweep_sgd

    return reproduce_width_sweep_sgd(preset, progress=progress, full=True)


def _prediction_scale_summary(preset: str, progress: bool) -> dict:
    from companion.prediction import prediction_scale_scan

    return prediction_scale_scan(preset, progress=progress)


def _unstable_lr_summary(preset: str, progress: bool) -> dict:
    from companion.unstable import reproduce_unstable

    return reproduce_unstable(preset, progress=progress)


#: Experiments this runner can summarize in full.
SUMMARIES: dict[str, Callable[[str, bool], dict]] = {
    "width_sweep": _width_sweep_summary,
    "width_sweep_sgd": _width_sweep_sgd_summary,
    "prediction_scale": _prediction_scale_summary,
    "unstable_lr": _unstable_lr_summary,
}


def _preset_names(experiment: str) -> tuple[str, ...]:
    """The presets of ``experiment`` (the registry's, or the prediction scan's own)."""
    if experiment == "prediction_scale":
        from companion.prediction import SCALE_SCAN

        return tuple(SCALE_SCAN)
    from companion.registry import get_experiment

    return get_experiment(experiment).preset_names()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.provenance", description=__doc__.split("\n")[0])
    parser.add_argument("experiment", help=f"one of {sorted(SUMMARIES)}")
    parser.add_argument("--preset", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.experiment not in SUMMARIES:
        print(f"unknown experiment {args.experiment!r}; known: {sorted(SUMMARIES)}", file=sys.stderr)
        return 2
    presets = _preset_names(args.experiment)
    if args.preset not in presets:  # refused before any compute, naming the flag
        print(
            f"--preset must be one of {', '.join(presets)} for {args.experiment}, got {args.preset!r}", file=sys.stderr
        )
        return 2
    command = "JAX_PLATFORMS=cpu python -m companion.provenance " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    code = git_state()  # the code that runs, not whatever HEAD is when it finishes
    start = time.perf_counter()
    summary = SUMMARIES[args.experiment](args.preset, args.progress)
    prov = provenance(command, args.preset, time.perf_counter() - start, code)
    write_result(args.out, summary, prov)
    print(f"wrote {args.out} ({prov['wall_time_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
