import os
import sys
from pathlib import Path

# Under pytest-xdist (`make test`: two workers), each worker gets a core of its own before JAX starts,
# so XLA runs one thread per worker instead of two workers' thread pools oversubscribing both cores.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    _count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if len(_cores) >= _count > 1:
        os.sched_setaffinity(0, {_cores[int(_worker[2:]) % len(_cores)]})

# tests/regenerate.py is imported by the notebook-sync test.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests compare against float64 references: opt in to 64-bit types (the package no longer does
# it at import). tests/test_core.py checks the float32-only configuration in a fresh process.
import companion  # noqa: E402

companion.enable_float64()

# Property tests draw their examples from a fixed seed: a test run is deterministic, so CI can never
# be red by the luck of the draw (a failure found while developing is kept as an explicit example).
from hypothesis import settings  # noqa: E402

settings.register_profile("book", derandomize=True)
settings.load_profile("book")
