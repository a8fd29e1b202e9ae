"""Chapter 1 runs where a reader has only its notebook and `pip install companion[book]` (Colab).

Builds the package's wheel from a copy of the sources, installs it with its ``book`` extra into a
fresh virtual environment (no system site packages; the versions pinned in requirements.txt as
constraints, pip's own wheel cache as on any machine), and executes chapter 1's committed
reference notebook there, in a folder outside the repository, with nbclient: what Colab does
after the install cell (which finds ``companion`` installed and does nothing).

Measured on the 2-core build machine with a warm pip cache: see README ("Measured"). Set
COMPANION_SKIP_INSTALL_TEST=1 to skip it (for example offline).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "book" / "01_teacher.ipynb"

RUNNER = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[3])
"""


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.mark.skipif(os.environ.get("COMPANION_SKIP_INSTALL_TEST") == "1", reason="COMPANION_SKIP_INSTALL_TEST=1")
def test_chapter_one_runs_from_the_wheel_in_a_fresh_environment(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "companion", source / "companion", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)])
    (wheel,) = wheels.glob("companion-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "".join(
            line + "\n"
            for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line and not line.startswith(("#", "-e"))
        )
    )
    # --no-compile: bytecode is compiled on import instead (about half the install time, same behaviour)
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            "-c",
            str(constraints),
            f"{wheel}[book]",
            "nbclient",
            "ipykernel",
        ]
    )

    work = tmp_path / "colab"
    work.mkdir()
    notebook = work / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MPLBACKEND", "VIRTUAL_ENV")}
    env.update(
        JAX_PLATFORMS="cpu", COMPANION_CACHE=str(tmp_path / "cache"), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}"
    )
    executed = work / "executed.ipynb"
    _run([str(python), "-c", RUNNER, str(notebook), str(work), str(executed)], env=env, cwd=work, timeout=1800)

    # The package came from the wheel, not from the repository.
    where = _run([str(python), "-c", "import companion; print(companion.__file__)"], env=env, cwd=work).stdout
    assert str(venv) in where and str(ROOT) not in where
    cells = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    reference = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    # Same kinds of output in every cell as the reference (text, figures, tables): nothing went missing.
    kinds = [[sorted(o.get("data", {"stream": 1})) for o in c.outputs] for c in cells]
    assert kinds == [[sorted(o.get("data", {"stream": 1})) for o in c.outputs] for c in reference]
