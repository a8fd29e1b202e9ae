import sys
from pathlib import Path

# tests/regenerate.py is imported by the notebook-sync test.
sys.path.insert(0, str(Path(__file__).resolve().parent))
