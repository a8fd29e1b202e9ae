"""Open every page of the built book in headless Chromium and check what a reader would see.

Serves ``_build/html`` on 127.0.0.1, loads each chapter page with JavaScript (so MathJax runs),
and fails if a page has raw TeX left unrendered, a missing figure, a broken internal link, or a
Python traceback in an output. Saves one screenshot per page.

Usage: python tests/browser.py [--html _build/html] [--shots _build/screenshots]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a browser closing a connection early is fine
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages(html: Path) -> list[str]:
    """Every page of the book (relative paths), from the built book/ folder."""
    return sorted(str(p.relative_to(html)) for p in (html / "book").glob("*.html"))


def render(chromium: str, url: str, profile: str) -> str:
    """The DOM after scripts ran (MathJax included), via --dump-dom with a virtual time budget."""
    out = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0 or "<html" not in out.stdout:
        raise RuntimeError(f"chromium failed on {url}: {out.stderr[-500:]}")
    return out.stdout


def screenshot(chromium: str, url: str, profile: str, path: Path) -> None:
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         "--window-size=1280,2400", f"--screenshot={path}", url],
        capture_output=True, text=True, timeout=120, check=True,
    )


def _exists(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, TimeoutError):
        return False


def check_page(dom: str, page_url: str, base: str) -> list[str]:
    """Problems a reader would see on one rendered page."""
    soup = BeautifulSoup(dom, "html.parser")
    problems = []
    main = soup.find("main") or soup
    # Raw TeX: MathJax replaces each math span's text with an <mjx-container>.
    for node in main.select(".math"):
        if node.find("mjx-container") is None and any(tok in node.get_text() for tok in ("\\(", "\\[", "$$", "\\begin")):
            problems.append(f"unrendered math: {node.get_text()[:60]!r}")
    if not main.select("mjx-container") and main.select(".math"):
        problems.append("MathJax did not run (no rendered math on a page with math)")
    text = main.get_text()
    if "|---|" in text:
        problems.append("a Markdown table is shown as raw text")
    if "Traceback (most recent call last)" in text or "Error\u001b" in text:
        problems.append("a Python traceback is shown in an output")
    for img in main.find_all("img"):
        src = urllib.parse.urljoin(page_url, img.get("src", ""))
        if src.startswith(base) and not _exists(src):
            problems.append(f"missing figure: {img.get('src')}")
    for a in main.find_all("a", href=True):
        href = a["href"]
        if href.startswith(("http:", "https:", "mailto:", "#")) and not href.startswith(base):
            if href.startswith("#") and len(href) > 1 and soup.find(id=href[1:]) is None:
                problems.append(f"broken anchor: {href}")
            continue
        target = urllib.parse.urljoin(page_url, href)
        path, _, fragment = target.partition("#")
        if not _exists(path):
            problems.append(f"broken link: {href}")
        elif fragment and path != page_url:
            with urllib.request.urlopen(path, timeout=10) as response:
                if BeautifulSoup(response.read(), "html.parser").find(id=fragment) is None:
                    problems.append(f"broken anchor: {href}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--shots", type=Path, default=ROOT / "_build" / "screenshots")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("chromium not found: install Debian's 'chromium' package")
        return 2
    if not (args.html / "book").is_dir():
        print(f"no built book under {args.html}: run `make book` first")
        return 2
    args.shots.mkdir(parents=True, exist_ok=True)
    server, base = serve(args.html)
    failures = 0
    try:
        with tempfile.TemporaryDirectory() as profile:
            for page in pages(args.html):
                url = base + page
                problems = check_page(render(chromium, url, profile), url, base)
                screenshot(chromium, url, profile, args.shots / (Path(page).stem + ".png"))
                status = "ok" if not problems else "FAIL"
                print(f"{status:4} {page}")
                for p in problems:
                    print(f"     {p}")
                failures += bool(problems)
    finally:
        server.shutdown()
    print(f"{failures} of {len(pages(args.html))} pages with problems; screenshots in {args.shots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
