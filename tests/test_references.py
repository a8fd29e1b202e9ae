"""Every bibliography entry is cited somewhere in the book, and every citation has an entry."""

from __future__ import annotations

import re
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def bib_keys(text: str) -> set[str]:
    """The entry keys of a BibTeX file's text."""
    return set(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.M))


def cited_keys(text: str) -> set[str]:
    """Every key in a MyST ``{cite}`a,b``` role of a page's text."""
    return {key.strip() for group in CITE.findall(text) for key in group.split(",")}


def test_parsers_find_what_they_should():
    assert bib_keys("@book{x1,\n title={a}}\n@article{y_2, a=b}") == {"x1", "y_2"}
    assert cited_keys("see {cite}`a, b` and {cite:p}`c`; not `d`") == {"a", "b", "c"}


def test_every_bibliography_entry_is_cited_and_every_citation_exists():
    entries = bib_keys((BOOK / "references.bib").read_text())
    cited = set().union(*(cited_keys(p.read_text()) for p in BOOK.glob("*.md")))
    assert entries, "no entries found in references.bib"
    assert not entries - cited, f"bibliography entries never cited in book/*.md: {sorted(entries - cited)}"
    assert not cited - entries, f"citations with no bibliography entry: {sorted(cited - entries)}"
