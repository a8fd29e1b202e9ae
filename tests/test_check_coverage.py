"""The per-module coverage gate reads the data file pyproject.toml names, and fails a module below its floor."""

from __future__ import annotations

import check_coverage
import coverage
import pytest


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A tiny project: pyproject.toml naming a data file, a package of two modules, and data on them."""
    package = tmp_path / "companion"
    package.mkdir()
    (package / "full.py").write_text("a = 1\nb = 2\n")
    (package / "half.py").write_text("a = 1\nb = 2\nc = 3\nd = 4\n")
    (tmp_path / "pyproject.toml").write_text('[tool.coverage.run]\ndata_file = "_build/cov/.coverage"\n')
    (tmp_path / "_build" / "cov").mkdir(parents=True)
    data = coverage.CoverageData(str(tmp_path / "_build" / "cov" / ".coverage"))
    data.add_lines({str(package / "full.py"): [1, 2], str(package / "half.py"): [1, 2]})
    data.write()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(check_coverage, "ROOT", tmp_path)
    monkeypatch.setattr(check_coverage, "PACKAGE", package)
    return tmp_path


def test_reads_the_configured_data_file_and_flags_the_module_below_the_floor(project, capsys):
    # CI's first run of the gate read no data: Coverage(data_file=None) means "no file", not "the default".
    assert check_coverage.main([]) == 1
    out = capsys.readouterr()
    assert "half" in out.err and "full" not in out.err and "50.0%" in out.out
    assert check_coverage.main(["--floor", "50"]) == 0


def test_an_explicit_data_file_and_missing_data(project, capsys):
    assert check_coverage.main(["--floor", "50", "--data-file", str(project / "_build" / "cov" / ".coverage")]) == 0
    assert check_coverage.main(["--data-file", str(project / "nothing")]) == 2
    assert "no coverage data" in capsys.readouterr().err
