"""The whole book as one PDF: Sphinx's single-page HTML printed by headless Chromium.

``make pdf`` builds ``_build/singlehtml`` (reusing the HTML build's executed notebooks through the
shared doctrees: nothing is executed twice), then this script serves it on 127.0.0.1, lets
MathJax typeset (a virtual time budget), prints it to ``_build/html/companion-book.pdf`` (where
the introduction links it) and checks the result: page count and no raw TeX left.

Interactive figures print as their still images (``nb_mime_priority_overrides`` in
``_config.yml``), equation numbers and the bibliography are those of the HTML book.

Usage: python tests/pdf.py [--html _build/singlehtml] [--out _build/html/companion-book.pdf]
       python tests/pdf.py --check FILE
"""

from __future__ import annotations

import argparse
import html as _html
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import browser

ROOT = Path(__file__).resolve().parents[1]
PDF_NAME = "companion-book.pdf"
#: Fragments that only appear if MathJax did not typeset an expression.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\end\{|\\frac\{|\\mathbb\{|\\sum_|\\langle")

# Print styles: drop the theme's navigation, keep the article at full width, avoid cut figures.
PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm; }
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-footer, .bd-footer-article,
.header-article, .prev-next-area, .headerlink, .toggle-details, .copybtn, .bd-header-article,
.sidebar-toggle, .search-button, #pst-back-to-top, .tag_hide-input summary { display: none !important; }
html, body { width: auto !important; }
.bd-page-width, .bd-container, .bd-container__inner, .bd-main, .bd-content, .bd-article-container,
.bd-article { display: block !important; max-width: 100% !important; width: auto !important;
  min-width: 0 !important; margin: 0 !important; padding: 0 !important; flex: none !important; }
h1, h2, h3, p, li, dd, dt { overflow-wrap: anywhere; }
div.cell, div.cell_input, div.cell_output, div.highlight { page-break-inside: auto; }
.cell_output img, figure img { max-width: 100% !important; page-break-inside: avoid; }
div.highlight pre { white-space: pre-wrap !important; word-break: break-word; }
details { display: block; }
"""


def _printable_page(html_dir: Path) -> Path:
    """The single page as ``html_dir/print.html``, with the print styles linked.

    With the book's root document in ``book/``, Jupyter Book writes the single page to
    ``book/00_intro.html`` (``index.html`` only redirects there) but computes every link in it
    relative to the output root: the page is only whole when served from the root.
    """
    index = html_dir / "index.html"
    text = index.read_text()
    redirect = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', text)
    if redirect:
        text = (html_dir / redirect.group(1)).read_text()
    (html_dir / "_static" / "companion-print.css").write_text(PRINT_CSS)
    link = '<link rel="stylesheet" href="_static/companion-print.css" />'
    page = html_dir / "print.html"
    page.write_text(text.replace("</head>", link + "\n</head>", 1))
    return page


def print_pdf(html_dir: Path, out: Path, budget_ms: int = 60000) -> float:
    """Print ``html_dir/index.html`` to ``out``; returns seconds taken."""
    chromium = browser.find_chromium()
    if chromium is None:
        raise SystemExit("chromium not found: install Debian's 'chromium' package")
    if not (html_dir / "index.html").exists():
        raise SystemExit(f"no single-page build in {html_dir}: run `make pdf`")
    page = _printable_page(html_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    server, base = browser.serve(html_dir)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    chromium,
                    *browser.CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--virtual-time-budget={budget_ms}",
                    "--run-all-compositor-stages-before-draw",
                    "--no-pdf-header-footer",
                    f"--print-to-pdf={out}",
                    base + page.name,
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
    finally:
        server.shutdown()
    return time.perf_counter() - start


def pdf_pages(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def code_text(html: str) -> str:
    """The text of every ``<pre>`` block of a page (the printed code cells), whitespace collapsed."""
    blocks = re.findall(r"<pre[^>]*>(.*?)</pre>", html, flags=re.S)
    return " ".join(" ".join(_html.unescape(re.sub(r"<[^>]+>", "", b)).split()) for b in blocks)


def raw_tex(text: str, code: str = "") -> list[str]:
    """TeX fragments MathJax left untypeset in the printed ``text``.

    A printed line whose text (whitespace collapsed) is part of a code block in ``code`` is code
    the book shows, such as a Matplotlib label ``r"$\\frac{1}{2}$"``: TeX there is meant to stay.
    """
    found = set()
    for line in text.splitlines():
        hits = {m.group(0) for m in RAW_TEX.finditer(line)}
        if hits and not (code and " ".join(line.split()) in code):
            found |= hits
    return sorted(found)


def check_pdf(path: Path, min_pages: int = 40, code: str = "") -> list[str]:
    """Problems of a printed book: too few pages, raw TeX outside code, missing parts.

    ``code``: the printed page's code text (:func:`code_text`), whose TeX is not a problem.
    """
    problems = []
    pages = pdf_pages(path)
    if pages < min_pages:
        problems.append(f"only {pages} pages (expected at least {min_pages})")
    text = pdf_text(path)
    raw = raw_tex(text, code)
    if raw:
        problems.append(f"raw TeX survived: {raw}")
    for needed in ("Emergence and scaling laws", "References", "Traceback (most recent call last)"):
        present = needed.lower() in text.lower()
        if needed.startswith("Traceback") and present:
            problems.append("a Python traceback is printed")
        elif not needed.startswith("Traceback") and not present:
            problems.append(f"missing text: {needed!r}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "singlehtml")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "html" / PDF_NAME)
    parser.add_argument("--check", type=Path, help="only check an existing PDF")
    parser.add_argument("--min-pages", type=int, default=40)
    args = parser.parse_args(argv)
    if args.check is None:
        if shutil.which("pdfinfo") is None:
            raise SystemExit("pdfinfo/pdftotext not found: install Debian's 'poppler-utils' package")
        seconds = print_pdf(args.html, args.out)
        print(f"printed {args.out} in {seconds:.1f} s")
    path = args.check or args.out
    page = args.html / "print.html"
    problems = check_pdf(path, args.min_pages, code_text(page.read_text()) if page.exists() else "")
    print(f"{path}: {pdf_pages(path)} pages" + ("" if not problems else "; " + "; ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
