"""Open every page of the built book in headless Chromium and check what a reader would see.

Serves ``_build/html`` on 127.0.0.1, loads each chapter page with JavaScript (so MathJax runs),
and fails if a page has raw TeX left unrendered, a missing figure, a broken internal link, or a
Python traceback in an output. On pages with interactive figures it moves every slider (setting
the range input and dispatching its ``input`` event, as a reader's drag does) and fails if the
figure did not change. It loads each page again at phone width (390 px) and fails on horizontal
overflow of the page. Saves two screenshots per page (1280 px and 390 px wide; ``--no-shots``: none) and lists code
blocks and outputs wider than the text column at the theme's default width (they scroll inside
themselves; listed, not failed).

Pages are checked ``--jobs`` at a time (default 2), each in its own Chromium profile.

Usage: python tests/browser.py [--html _build/html] [--shots _build/screenshots] [--no-shots] [--jobs 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import json
import re
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
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


#: Appended to a page requested with ``?companion-check``: runs after load, writes its findings
#: as JSON into ``<pre id="companion-check">`` for ``--dump-dom`` to carry back.
CHECK_SCRIPT = r"""
<script>
window.addEventListener("load", function () { setTimeout(function () {
  var out = {width: window.innerWidth, pageWidth: document.documentElement.scrollWidth,
             overflow: [], wide: [], figures: []};
  function scrolls(el) {
    for (var p = el.parentElement; p; p = p.parentElement) {
      var o = getComputedStyle(p).overflowX;
      if (o === "auto" || o === "scroll" || o === "hidden") return true;
    }
    return false;
  }
  var main = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
  main.querySelectorAll("*").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > window.innerWidth + 1 && !scrolls(el) && out.overflow.length < 5)
      out.overflow.push(el.tagName.toLowerCase() + "." + (el.className || "").toString().split(" ").join(".") + " right=" + Math.round(r.right));
  });
  main.querySelectorAll("div.highlight pre, div.cell_output pre").forEach(function (el) {
    if (el.scrollWidth > el.clientWidth + 1 && out.wide.length < 20)
      out.wide.push(el.textContent.split("\n").reduce(function (a, b) { return a.length >= b.length ? a : b; }).slice(0, 80));
  });
  document.querySelectorAll(".companion-interactive").forEach(function (root) {
    var plot = root.querySelector(".plotly-graph-div"), f = {id: root.id, plotly: !!window.Plotly,
      drawn: !!(plot && plot.querySelector(".main-svg")), sliders: []};
    function state() { return JSON.stringify((plot.data || []).map(function (t) { return t.visible; })) +
      (plot.layout && plot.layout.title ? JSON.stringify(plot.layout.title.text) : ""); }
    root.querySelectorAll("input[type=range]").forEach(function (input) {
      var before = state(), label = root.querySelector("output[data-for=" + input.name + "]").textContent;
      input.value = String((+input.value + 1) % (+input.max + 1));
      input.dispatchEvent(new Event("input", {bubbles: true}));
      f.sliders.push({name: input.name, changed: state() !== before,
        label: root.querySelector("output[data-for=" + input.name + "]").textContent !== label});
    });
    out.figures.push(f);
  });
  // Inside the phone-width frame, report to the outer page (the one --dump-dom returns).
  var host = window.parent !== window ? window.parent.document : document;
  var pre = host.createElement("pre"); pre.id = "companion-check";
  pre.textContent = JSON.stringify(out); host.body.appendChild(pre);
}, 1000); });
</script>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/__phone__":
            # Headless Chromium will not make its window narrower than 500 px: a phone-width
            # frame around the page gives it a true 390 px viewport (media queries included).
            target = urllib.parse.unquote(query)
            body = (
                f'<!DOCTYPE html><html><body style="margin:0"><iframe src="{target}" '
                f'width="{PHONE[0]}" height="{PHONE[1]}" style="border:0"></iframe></body></html>'
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if query != "companion-check" or not path.endswith(".html"):
            return super().do_GET()
        file = Path(self.translate_path(path))
        if not file.is_file():
            return super().do_GET()
        body = file.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>", 1).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


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


PHONE = (390, 844)
DESKTOP = (1280, 2400)


def render(chromium: str, url: str, profile: str, size: tuple[int, int] = DESKTOP) -> str:
    """The DOM after scripts ran (MathJax included), via --dump-dom with a virtual time budget."""
    out = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            f"--window-size={size[0]},{size[1]}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 or "<html" not in out.stdout:
        raise RuntimeError(f"chromium failed on {url}: {out.stderr[-500:]}")
    return out.stdout


def screenshot(chromium: str, url: str, profile: str, path: Path, size: tuple[int, int] = DESKTOP) -> None:
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={path}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@functools.cache
def _exists(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, TimeoutError):
        return False


@functools.cache
def _ids(url: str) -> frozenset[str]:
    """The element ids of a served page (cached: the API page links hundreds of source anchors)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8", "replace")
    return frozenset(re.findall(r'\bid="([^"]+)"', text))


def page_check(dom: str) -> dict | None:
    """The findings CHECK_SCRIPT left in a dumped DOM (None if it did not run)."""
    node = BeautifulSoup(dom, "html.parser").find(id="companion-check")
    return json.loads(node.get_text()) if node is not None else None


def check_interactive(found: dict | None, dom: str) -> list[str]:
    """Problems of a page's interactive figures: not drawn, or a slider that changes nothing."""
    expected = dom.count('class="companion-interactive"')
    if not expected:
        return []
    if found is None:
        return ["the in-page check did not run"]
    problems = []
    if len(found["figures"]) != expected:
        problems.append(f"{expected} interactive figures in the HTML, {len(found['figures'])} on the page")
    for figure in found["figures"]:
        if not figure["plotly"] or not figure["drawn"]:
            problems.append(f"{figure['id']}: Plotly did not draw the figure (plotly loaded: {figure['plotly']})")
        for slider in figure["sliders"]:
            if not (slider["changed"] and slider["label"]):
                problems.append(f"{figure['id']}: moving slider {slider['name']!r} did not change the figure")
    return problems


def check_phone(found: dict | None) -> list[str]:
    """Horizontal overflow of the page at phone width."""
    if found is None:
        return ["the in-page check did not run at phone width"]
    problems = []
    if found["pageWidth"] > found["width"] + 1:
        problems.append(f"page scrolls sideways at {found['width']} px (content {found['pageWidth']} px wide)")
    problems += [f"overflows the text column at {found['width']} px: {e}" for e in found["overflow"]]
    return problems


def check_page(dom: str, page_url: str, base: str) -> list[str]:
    """Problems a reader would see on one rendered page."""
    soup = BeautifulSoup(dom, "html.parser")
    problems = []
    main = soup.find("main") or soup
    # Raw TeX: MathJax replaces each math span's text with an <mjx-container>.
    for node in main.select(".math"):
        if node.find("mjx-container") is None and any(
            tok in node.get_text() for tok in ("\\(", "\\[", "$$", "\\begin")
        ):
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
    ids = {node["id"] for node in soup.find_all(id=True)}  # once: the API page has thousands of anchors
    for a in main.find_all("a", href=True):
        href = a["href"]
        if href.startswith(("http:", "https:", "mailto:", "#")) and not href.startswith(base):
            if href.startswith("#") and len(href) > 1 and urllib.parse.unquote(href[1:]) not in ids:
                problems.append(f"broken anchor: {href}")
            continue
        target = urllib.parse.urljoin(page_url, href)
        path, _, fragment = target.partition("#")
        if not _exists(path):
            problems.append(f"broken link: {href}")
        elif fragment and path != page_url and urllib.parse.unquote(fragment) not in _ids(path):
            problems.append(f"broken anchor: {href}")
    return problems


def check_one(chromium: str, base: str, page: str, shots: Path | None) -> tuple[list[str], dict | None]:
    """Load one page at desktop and at phone width (its own Chromium profile), check it, and save
    its two screenshots into ``shots`` (None: none). Returns (problems, the in-page findings)."""
    url = base + page
    with tempfile.TemporaryDirectory() as profile:
        dom = render(chromium, url + "?companion-check", profile)
        found = page_check(dom)
        problems = check_page(dom, url, base) + check_interactive(found, dom)
        framed = f"{base}__phone__?{urllib.parse.quote('/' + page + '?companion-check')}"
        problems += check_phone(page_check(render(chromium, framed, profile, (500, PHONE[1]))))
        if shots is not None:
            stem = Path(page).stem
            screenshot(chromium, url, profile, shots / f"{stem}.png")
            phone = f"{base}__phone__?{urllib.parse.quote('/' + page)}"
            screenshot(chromium, phone, profile, shots / f"{stem}-phone.png", (PHONE[0], PHONE[1]))
    return problems, found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--shots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--no-shots", action="store_true", help="check only, save no screenshots")
    parser.add_argument("--jobs", type=int, default=2, help="pages checked at once, each by its own Chromium")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    chromium = find_chromium()
    if chromium is None:
        print("chromium not found: install Debian's 'chromium' package")
        return 2
    if not (args.html / "book").is_dir():
        print(f"no built book under {args.html}: run `make book` first")
        return 2
    shots = None if args.no_shots else args.shots
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    server, base = serve(args.html)
    book = pages(args.html)
    failures = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = pool.map(lambda page: check_one(chromium, base, page, shots), book)
            for page, (problems, found) in zip(book, results, strict=True):  # printed in page order
                status = "ok" if not problems else "FAIL"
                sliders = sum(len(f["sliders"]) for f in (found or {}).get("figures", []))
                print(f"{status:4} {page}" + (f" ({sliders} sliders moved)" if sliders else ""))
                for p in problems:
                    print(f"     {p}")
                for line in (found or {}).get("wide", []):
                    print(f"     note: wider than the column at {DESKTOP[0]} px: {line!r}")
                failures += bool(problems)
    finally:
        server.shutdown()
    where = f"screenshots in {shots}" if shots is not None else "no screenshots"
    print(f"{failures} of {len(book)} pages with problems; {where}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
