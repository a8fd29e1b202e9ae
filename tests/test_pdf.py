"""The whole-book PDF (make pdf): enough pages, the book's parts, and no raw TeX left."""

from __future__ import annotations

import shutil

import pdf
import pytest

BOOK_PDF = pdf.ROOT / "_build" / "html" / pdf.PDF_NAME


def test_the_built_pdf_has_the_whole_book_and_typeset_math():
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils is not installed (apt-get install poppler-utils); the PDF check did not run")
    if not BOOK_PDF.exists():
        pytest.skip(f"no {BOOK_PDF.name}: `make pdf` (or `make test` with chromium installed) builds it")
    page = pdf.ROOT / "_build" / "singlehtml" / "print.html"
    problems = pdf.check_pdf(BOOK_PDF, code=pdf.code_text(page.read_text()) if page.exists() else "")
    assert not problems, problems
    text = pdf.pdf_text(BOOK_PDF)
    for part in ("The teacher", "API reference", "Ren"):
        assert part in text, f"{part!r} missing from the PDF"


def test_checker_flags_raw_tex_short_books_and_tracebacks(monkeypatch):
    monkeypatch.setattr(pdf, "pdf_pages", lambda path: 12)
    monkeypatch.setattr(
        pdf, "pdf_text", lambda path: "Emergence and scaling laws \\(a_p\\) $$x$$\nTraceback (most recent call last)"
    )
    problems = pdf.check_pdf("book.pdf", min_pages=40)
    assert any("only 12 pages" in p for p in problems)
    assert any("raw TeX" in p and "\\(" in p and "$$" in p for p in problems)
    assert any("traceback" in p for p in problems)
    assert any("References" in p for p in problems)
    monkeypatch.setattr(pdf, "pdf_pages", lambda path: 80)
    monkeypatch.setattr(pdf, "pdf_text", lambda path: "Emergence and scaling laws f(x) = ∑ a_p σ(⟨v, x⟩)\nReferences")
    assert pdf.check_pdf("book.pdf", min_pages=40) == []


def test_tex_inside_printed_code_is_not_raw_tex():
    html = '<p>x</p><pre><span class="n">ax</span>.plot(t, label=r&quot;$\\frac{1}{2}\\sum_p a_p^2$&quot;)</pre>'
    code = pdf.code_text(html)
    assert 'ax.plot(t, label=r"$\\frac{1}{2}\\sum_p a_p^2$")' in code
    printed = '  ax.plot(t, label=r"$\\frac{1}{2}\\sum_p\nprose with \\frac{1}{2} untypeset'
    assert pdf.raw_tex(printed, code) == ["\\frac{"]  # the code line passes, the prose line does not
    assert pdf.raw_tex(printed) == ["\\frac{", "\\sum_"]
