"""Where the book's repository lives: one source for the launch buttons and every install cell.

The repository URL and branch (or commit) are written once, in ``_config.yml``'s ``repository``
block: the launch buttons (Colab, Binder) and the repository button read them there. Every
chapter's first code cell is the install cell rendered from them by :func:`install_cell`, so a
chapter opened alone (Colab downloads only the one notebook) still installs ``companion`` from that
repository at that ref. ``test_install_cell`` keeps the cells identical to the template.

Usage:
  python tests/configure_book.py --check            # exit 1 if a chapter's install cell is stale
  python tests/configure_book.py --write            # rewrite install cells from _config.yml
  python tests/configure_book.py --from-env         # CI: repository and commit from GITHUB_* vars
  python tests/configure_book.py --repo URL --ref REF
The last two rewrite ``_config.yml``'s repository block, then every install cell (the chapters'
``.md`` and their reference ``.ipynb``: the cell has no output, so nothing needs re-executing).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
MARKER = "# On Colab or Binder, install the companion package"

TEMPLATE = """\
# On Colab or Binder, install the companion package (and its pinned dependencies) first,
# from the repository and commit this book was built from (tests/configure_book.py writes them).
import importlib.util, subprocess, sys
if importlib.util.find_spec("companion") is None:
    REPO, REF = "{url}", "{ref}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"companion[book] @ git+{{REPO}}@{{REF}}"], check=True)"""

_URL = re.compile(r"^https://[A-Za-z0-9.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REF = re.compile(r"^[A-Za-z0-9_./-]+$")


def install_cell(url: str, ref: str) -> str:
    """The install cell's source for a repository URL and a branch, tag or commit."""
    if not _URL.match(url):
        raise ValueError(f"url must look like https://host/owner/name, got {url!r}")
    if not _REF.match(ref) or ".." in ref:
        raise ValueError(f"ref must be a branch, tag or commit name, got {ref!r}")
    return TEMPLATE.format(url=url, ref=ref)


def repository(config: Path = CONFIG) -> tuple[str, str]:
    """(url, branch) of ``_config.yml``'s repository block."""
    text = config.read_text()
    block = re.search(r"^repository:\n((?:[ ]+.*\n)+)", text, re.M)
    if block is None:
        raise ValueError(f"{config} has no repository block")
    url = re.search(r"^\s+url:\s*(\S+)", block.group(1), re.M)
    branch = re.search(r"^\s+branch:\s*(\S+)", block.group(1), re.M)
    if url is None or branch is None:
        raise ValueError(f"{config}'s repository block needs url and branch")
    return url.group(1), branch.group(1)


def set_repository(url: str, ref: str, config: Path = CONFIG) -> None:
    """Rewrite the url and branch of ``_config.yml``'s repository block (comments kept)."""
    install_cell(url, ref)  # validates both
    text = config.read_text()
    head, sep, rest = text.partition("\nrepository:\n")
    if not sep:
        raise ValueError(f"{config} has no repository block")
    block_end = re.search(r"^\S", rest, re.M)
    block, tail = (rest[: block_end.start()], rest[block_end.start() :]) if block_end else (rest, "")
    block = re.sub(r"^(\s+url:\s*)\S+", lambda m: m.group(1) + url, block, flags=re.M)
    block = re.sub(r"^(\s+branch:\s*)\S+", lambda m: m.group(1) + ref, block, flags=re.M)
    config.write_text(head + sep + block + tail)


def chapters() -> list[Path]:
    """Every chapter with code cells: the book's MyST notebooks ``book/0*.md``."""
    return sorted((ROOT / "book").glob("0*.md"))


_CELL = re.compile(r"(```\{code-cell\}[^\n]*\n(?::[^\n]*\n)*)(.*?)(\n```)", re.S)


def _first_code_cell(text: str) -> re.Match | None:
    return _CELL.search(text)


def stale(expected: str | None = None) -> list[str]:
    """Chapters whose first code cell is not the expected install cell (default: from _config.yml)."""
    expected = expected if expected is not None else install_cell(*repository())
    out = []
    for source in chapters():
        match = _first_code_cell(source.read_text())
        if match is None or match.group(2) != expected:
            out.append(source.name)
    return out


def write_cells(cell: str) -> list[Path]:
    """Make every chapter's first code cell (``.md`` and reference ``.ipynb``) equal ``cell``."""
    changed = []
    for source in chapters():
        text = source.read_text()
        match = _first_code_cell(text)
        if match is None or MARKER not in match.group(2):
            raise ValueError(f"{source.name}: its first code cell is not the install cell")
        if match.group(2) != cell:
            source.write_text(text[: match.start(2)] + cell + text[match.end(2) :])
            changed.append(source)
        notebook = source.with_suffix(".ipynb")
        if notebook.exists():
            nb = nbformat.read(notebook, as_version=4)
            code = next(c for c in nb.cells if c.cell_type == "code")
            if MARKER not in code.source or code.get("outputs"):
                raise ValueError(f"{notebook.name}: its first code cell is not an output-free install cell")
            if code.source != cell:
                code.source = cell
                nbformat.write(nb, notebook)
                changed.append(notebook)
    return changed


def from_env(env=os.environ) -> tuple[str, str]:
    """(url, commit) of the repository CI checked out, from GitHub Actions' variables."""
    try:
        server, repo = env.get("GITHUB_SERVER_URL", "https://github.com"), env["GITHUB_REPOSITORY"]
        ref = env["GITHUB_SHA"]
    except KeyError as missing:
        raise SystemExit(f"--from-env needs {missing.args[0]} (set by GitHub Actions)") from None
    return f"{server.rstrip('/')}/{repo}", ref


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true")
    group.add_argument("--write", action="store_true")
    group.add_argument("--from-env", action="store_true")
    group.add_argument("--repo")
    parser.add_argument("--ref", default="main")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        print("install cells up to date" if not bad else f"stale install cells: {', '.join(bad)} (run --write)")
        return 1 if bad else 0
    if args.from_env or args.repo:
        url, ref = from_env() if args.from_env else (args.repo, args.ref)
        set_repository(url, ref)
    changed = write_cells(install_cell(*repository()))
    url, ref = repository()
    print(f"repository {url} at {ref}; rewrote {len(changed)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
