"""The chapter executor's plumbing: the build finds what it stored, the perturbation switch, timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nbformat
import numpy as np
import pytest
import timing
from execute import ROOT, read_chapter, store_in_build_cache

CHAPTER = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A page

    ```{code-cell} ipython3
    :tags: [remove-input]
    print(1 + 1)
    ```

    Some prose.

    ```{code-cell} ipython3
    x = 3
    x
    ```
    """
)


def test_the_build_finds_each_stored_chapter_under_myst_nbs_hash(tmp_path):
    """What tests/execute.py stores is what MyST-NB's cache lookup (execute_notebooks: cache)
    retrieves for the same Markdown source, outputs included: the build executes nothing."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    source = tmp_path / "page.md"
    source.write_text(CHAPTER)
    executed = read_chapter(source)
    code = [c for c in executed.cells if c.cell_type == "code"]
    code[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    code[1].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "3"}, execution_count=2)]
    for i, cell in enumerate(code):
        cell.execution_count = i + 1
    path = tmp_path / "page.ipynb"
    nbformat.write(executed, path)
    store_in_build_cache(path, source, tmp_path / "jcache", seconds=1.5)

    cache = get_cache(str(tmp_path / "jcache"))
    wanted = read_myst_markdown_notebook(CHAPTER)
    record = cache.match_cache_notebook(wanted)
    assert record.data["execution_seconds"] == 1.5
    _, merged = cache.merge_match_into_notebook(wanted)
    outputs = [c.outputs for c in merged.cells if c.cell_type == "code"]
    assert outputs[0][0]["text"] == "2\n" and outputs[1][0]["data"]["text/plain"] == "3"
    # an edited chapter does not match: the build would execute it, and the test of the build says so
    with pytest.raises(KeyError):
        cache.match_cache_notebook(read_myst_markdown_notebook(CHAPTER.replace("x = 3", "x = 4")))


def test_the_ulp_switch_moves_every_start_by_one_ulp_and_keys_the_cache_apart(monkeypatch):
    import jax

    from companion import _perturb
    from companion.cache import config_key
    from companion.student import init_student

    monkeypatch.delenv(_perturb.ENV_VAR, raising=False)
    V = np.asarray(init_student(jax.random.key(0), 5, 7))
    key = config_key({"d": 7})
    monkeypatch.setenv(_perturb.ENV_VAR, "ulp")
    W = np.asarray(init_student(jax.random.key(0), 5, 7))
    assert np.array_equal(W, np.nextafter(V, np.float32(np.inf)))
    assert config_key({"d": 7}) != key
    monkeypatch.setenv(_perturb.ENV_VAR, "two ulps")
    with pytest.raises(ValueError, match="COMPANION_PERTURB must be unset or 'ulp'"):
        init_student(jax.random.key(0), 5, 7)


def test_timing_report_splits_pytest_and_lists_chapters(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(timing, "LOG", tmp_path / "t.jsonl")
    monkeypatch.setattr(timing, "JUNIT", tmp_path / "pytest.xml")
    monkeypatch.setattr(timing, "CHAPTERS", tmp_path / "timings.json")
    assert timing.main(["run", "setup", "--", sys.executable, "-c", "pass"]) == 0
    assert timing.main(["run", "pytest", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    (tmp_path / "pytest.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_browser" time="90.5"/>'
        '<testcase classname="tests.test_cli" time="2.0"/><testcase classname="tests.test_sgd" time="1.0"/>'
        "</testsuite></testsuites>"
    )
    (tmp_path / "timings.json").write_text(json.dumps({"chapters": {"a": 1.0}, "jobs": 2}))
    assert timing.main(["report"]) == 0
    out = capsys.readouterr().out
    assert "browser check (Chromium): 90 s" in out and "unit tests: 3 s" in out
    assert [json.loads(line)["exit"] for line in (tmp_path / "t.jsonl").read_text().splitlines()] == [0, 3]


def test_a_failing_chapter_is_named_and_fails_the_run(tmp_path):
    source = tmp_path / "broken.md"
    source.write_text(CHAPTER.replace("x = 3", "raise RuntimeError('boom')"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "execute.py"),
            "--out",
            str(tmp_path / "out"),
            "--jobs",
            "1",
            str(source),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1
    assert "broken: FAILED" in done.stdout and "boom" in done.stdout
    assert not (tmp_path / "out" / "broken.ipynb").exists()
