import sys
from pathlib import Path

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
