"""Does `make test` still catch a wrong computation now that each chapter executes once? Mutate and see.

Each mutation changes one line of ``companion/`` in a scratch copy of the committed tree (a git
worktree), executes every chapter there with a fresh results cache (``tests/execute.py``, as
``make test`` does) and compares the outputs with the committed reference notebooks
(``tests/outputs.py``, nbval's rules); the unit tests run too, stopping at their first failure.
A mutation is *caught* when either turns red. The report, with provenance, goes to
``book/results/mutations.json``.

Usage: python tests/mutations.py [NAME ...]   (default: every mutation; about 5 minutes each)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "book" / "results" / "mutations.json"

#: name -> (what it breaks, file, the line as committed, the mutated line)
MUTATIONS: dict[str, tuple[str, str, str, str]] = {
    "loss-constant": (
        "closed-form loss: the constant of 1 - <u, v> = ‖v - u‖² / 2 (residual form) becomes 0.49",
        "companion/loss.py",
        "half_sq = 0.5 * jnp.sum(delta * delta, axis=1)",
        "half_sq = 0.49 * jnp.sum(delta * delta, axis=1)",
    ),
    "greedy-rate": (
        "greedy selection: the escape-rate constant k*(k*-2) becomes k*(k*-1) (every predicted time x 2/3 at h4)",
        "companion/selection.py",
        "rate = k_star * (k_star - 2) * activation.leading_coefficient**2",
        "rate = k_star * (k_star - 1) * activation.leading_coefficient**2",
    ),
    "greedy-reuse": (
        "greedy selection: a chosen direction is not removed, so another student may take it again",
        "companion/selection.py",
        "        free[:, q] = -np.inf",
        "        pass  # free[:, q] = -np.inf",
    ),
    "sgd-step": (
        "online SGD step: the radial (norm) term of the fused update 1% weaker",
        "companion/loss.py",
        "return (1.0 - lr * coef)[:, None] * V - (lr * r)[:, None] * G, jnp.max(r2)",
        "return (1.0 - 0.99 * lr * coef)[:, None] * V - (lr * r)[:, None] * G, jnp.max(r2)",
    ),
}


def _run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def try_mutation(name: str, scratch: Path) -> dict:
    """Apply one mutation in ``scratch`` (a worktree of HEAD), run the checks, undo it."""
    what, rel, before, after = MUTATIONS[name]
    path = scratch / rel
    text = path.read_text()
    if text.count(before) != 1:
        return {"what": what, "error": f"the line to mutate is not (exactly once) in {rel}: {before!r}"}
    path.write_text(text.replace(before, after))
    env = {
        **os.environ,
        "PYTHONPATH": str(scratch),  # the mutated package shadows the installed one, kernels included
        "COMPANION_CACHE": str(scratch / "_build" / "cache"),  # nothing computed by unmutated code
        "JAX_PLATFORMS": "cpu",
    }
    env.pop("COMPANION_EXECUTED", None)
    shutil.rmtree(scratch / "_build", ignore_errors=True)
    try:
        out = scratch / "_build" / "executed"
        code, log, seconds = _run([sys.executable, "tests/execute.py", "--out", str(out)], env, scratch)
        compare_code, compare_log, _ = _run([sys.executable, "tests/outputs.py", str(out)], env, scratch)
        # the unit tests until the first failure (the wheel and browser checks cannot see a numerical change)
        unit_code, unit_log, unit_seconds = _run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "tests"]
            + ["--ignore=tests/test_colab_install.py", "--ignore=tests/test_browser.py"],
            env,
            scratch,
        )
    finally:
        path.write_text(text)
    differing = [line.split(":")[0] for line in compare_log.splitlines() if line.endswith("differ")]
    failed_unit = [line for line in unit_log.splitlines() if line.startswith("FAILED")]
    return {
        "what": what,
        "file": rel,
        "line": after.strip(),
        "chapters_failed_to_execute": code != 0,
        "chapters_whose_outputs_moved": differing,
        "first_failing_unit_test": failed_unit[:1],
        "caught": code != 0 or compare_code != 0 or unit_code != 0,
        "execution_seconds": round(seconds, 1),
        "unit_seconds": round(unit_seconds, 1),
    }


def main(argv: list[str]) -> int:
    names = argv or list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"mutations must be among {', '.join(MUTATIONS)}, got {', '.join(unknown)}", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report: dict = {
        "command": "python tests/mutations.py " + " ".join(argv),
        "commit": commit,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "system": f"{platform.system()} {platform.release()}"},
        "mutations": {},
    }
    scratch = Path(tempfile.mkdtemp(prefix="companion-mutations-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(scratch), "HEAD"], cwd=ROOT, check=True, capture_output=True
    )
    try:
        for name in names:
            result = try_mutation(name, scratch)
            report["mutations"][name] = result
            print(f"{name}: {'caught' if result.get('caught') else 'NOT caught'} — {json.dumps(result)}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(scratch)], cwd=ROOT, capture_output=True)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULT.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return 0 if all(r.get("caught") for r in report["mutations"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
