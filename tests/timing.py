"""Where the time of a test run goes: each stage timed as it runs, one table at the end.

``.ci/run`` and ``make test`` run every stage through ``run``, which appends the stage's wall time
to ``.timings.jsonl`` (git-ignored); ``report`` prints the breakdown the README records: setup,
lint, the chapters' execution (and each chapter's time, from ``_build/executed/timings.json``),
the build's rendering, the PDF, and pytest split into unit tests, the executed-chapter comparison,
the browser check and the wheel check (from pytest's JUnit XML). Standard library only: it runs
before the virtual environment exists. Nothing here asserts a time; the budget is checked by
reading the table.

Usage: python3 tests/timing.py reset
       python3 tests/timing.py run STAGE -- COMMAND ...
       python3 tests/timing.py report
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / ".timings.jsonl"
CHAPTERS = ROOT / "_build" / "executed" / "timings.json"
JUNIT = ROOT / "_build" / "pytest.xml"
# pytest files reported on their own lines; every other test file counts as "unit tests".
PYTEST_PARTS = {
    "test_outputs": "executed chapters vs references (nbval rules)",
    "test_browser": "browser check (Chromium)",
    "test_colab_install": "wheel check (chapter 1 from the wheel)",
}


def run(stage: str, command: list[str]) -> int:
    start = time.perf_counter()
    code = subprocess.call(command)
    seconds = time.perf_counter() - start
    with LOG.open("a") as log:
        log.write(json.dumps({"stage": stage, "seconds": round(seconds, 1), "exit": code}) + "\n")
    return code


def pytest_parts(path: Path | None = None) -> dict[str, float]:
    """Seconds per part of the pytest run (setup, call and teardown of each test case)."""
    parts: dict[str, float] = {}
    for case in ET.parse(path or JUNIT).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        part = PYTEST_PARTS.get(module, "unit tests")
        parts[part] = parts.get(part, 0.0) + float(case.get("time", 0.0))
    return parts


def report() -> int:
    if not LOG.exists():
        print(f"no timings recorded ({LOG.name} is missing): run `bash .ci/run` or `make test`")
        return 1
    stages = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    rows = [(s["stage"], s["seconds"]) for s in stages]
    width = max(len(name) for name, _ in rows) + 2
    print(f"{'stage':<{width}} seconds")
    for name, seconds in rows:
        print(f"{name:<{width}} {seconds:7.1f}")
        if name == "execute chapters" and CHAPTERS.exists():
            chapters = json.loads(CHAPTERS.read_text())
            per = ", ".join(f"{k} {v:.0f}" for k, v in sorted(chapters["chapters"].items(), key=lambda kv: -kv[1]))
            print(f"{'':<{width}}   {chapters['jobs']} at a time; each chapter's seconds: {per}")
        if name == "pytest" and JUNIT.exists():
            for part, seconds_part in sorted(pytest_parts().items(), key=lambda kv: -kv[1]):
                print(f"{'':<{width}}   {part}: {seconds_part:.0f} s")
    total = sum(s for name, s in rows if name in ("setup", "make test"))
    if total:
        print(f"{'total':<{width}} {total:7.1f}  ({total / 60:.1f} min)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["reset"]:
        LOG.unlink(missing_ok=True)
        return 0
    if argv[:1] == ["report"]:
        return report()
    if len(argv) >= 3 and argv[0] == "run" and argv[2] == "--":
        return run(argv[1], argv[3:])
    print(__doc__.strip().split("Usage: ", 1)[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
