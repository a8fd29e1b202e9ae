"""The launch buttons and every chapter's install cell point at one repository and ref."""

from __future__ import annotations

import shutil

import configure_book as cb
import pytest


def test_every_install_cell_is_the_template_rendered_from_config():
    url, ref = cb.repository()
    assert not cb.stale(), (
        f"install cells differ from the template for {url}@{ref}: run `python tests/configure_book.py --write`"
    )


def test_install_cell_installs_the_configured_repository_at_the_ref():
    cell = cb.install_cell("https://github.com/someone/fork", "0123abc")
    namespace = {}
    # The pip argument the cell builds, evaluated without running pip.
    line = next(l for l in cell.splitlines() if "REPO, REF =" in l).strip()
    exec(line, namespace)
    target = f"companion[book] @ git+{namespace['REPO']}@{namespace['REF']}"
    assert target == "companion[book] @ git+https://github.com/someone/fork@0123abc"
    assert 'f"companion[book] @ git+{REPO}@{REF}"' in cell
    compile(cell, "install-cell", "exec")


@pytest.mark.parametrize(
    "url, ref",
    [
        ("http://github.com/a/b", "main"),
        ("https://github.com/a", "main"),
        ("https://github.com/a/b", "main; rm -rf"),
        ("https://github.com/a/b", "../x"),
    ],
)
def test_bad_repository_or_ref_is_refused(url, ref):
    with pytest.raises(ValueError, match="url|ref"):
        cb.install_cell(url, ref)


def test_set_repository_rewrites_only_the_repository_block(tmp_path):
    config = tmp_path / "_config.yml"
    shutil.copy(cb.CONFIG, config)
    before = config.read_text()
    cb.set_repository("https://github.com/someone/fork", "abc1234", config)
    assert cb.repository(config) == ("https://github.com/someone/fork", "abc1234")
    after = config.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=False) if a != b]
    assert len(changed) == 2 and len(before.splitlines()) == len(after.splitlines())
    assert all(b.lstrip().startswith(("url:", "branch:")) for _, b in changed)


def test_from_env_reads_github_actions_variables():
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "owner/book", "GITHUB_SHA": "f" * 40}
    assert cb.from_env(env) == ("https://github.com/owner/book", "f" * 40)
    with pytest.raises(SystemExit, match="GITHUB_SHA"):
        cb.from_env({"GITHUB_REPOSITORY": "owner/book"})
