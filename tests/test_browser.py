"""Every built page renders for a reader: math typeset, figures present, links alive, no tracebacks.

Runs tests/browser.py against _build/html (made by `make book`, which `make test` runs first).
Skips, saying why, when Chromium or the built book is missing. Saves no screenshots: run
`python tests/browser.py` for them.
"""

import browser
import pytest


def test_pages_render_in_a_browser(tmp_path, capsys):
    if browser.find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); the browser check did not run")
    if not (browser.ROOT / "_build" / "html" / "book").is_dir():
        pytest.skip("no built book in _build/html: run `make book` first")
    code = browser.main(["--no-shots"])  # screenshots: `python tests/browser.py` (twice the Chromium launches)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "FAIL" not in report


def test_checker_flags_raw_tex_and_tracebacks():
    page = (
        '<html><body><main><span class="math">\\(x^2\\)</span>'
        "<pre>Traceback (most recent call last):</pre><p>| a |\n|---|</p><a href='#nowhere'>x</a></main></body></html>"
    )
    problems = browser.check_page(page, "http://127.0.0.1:1/book/x.html", "http://127.0.0.1:1/")
    assert any("unrendered math" in p for p in problems)
    assert any("traceback" in p for p in problems)
    assert any("broken anchor" in p for p in problems)
    assert any("Markdown table" in p for p in problems)


def test_checker_flags_dead_sliders_and_phone_overflow():
    dom = '<div class="companion-interactive" id="companion-x"></div>'
    found = {
        "figures": [
            {
                "id": "companion-x",
                "plotly": True,
                "drawn": True,
                "sliders": [{"name": "d", "changed": False, "label": True}],
            }
        ]
    }
    assert any("slider 'd'" in p for p in browser.check_interactive(found, dom))
    found["figures"][0]["sliders"][0]["changed"] = True
    assert browser.check_interactive(found, dom) == []
    assert browser.check_interactive(None, dom) == ["the in-page check did not run"]
    assert any(
        "did not draw" in p
        for p in browser.check_interactive(
            {"figures": [{"id": "companion-x", "plotly": False, "drawn": False, "sliders": []}]}, dom
        )
    )
    assert browser.check_interactive(None, "<p>no figure</p>") == []
    assert browser.check_phone({"width": 390, "pageWidth": 390, "overflow": []}) == []
    problems = browser.check_phone({"width": 390, "pageWidth": 620, "overflow": ["table.table right=620"]})
    assert any("scrolls sideways" in p for p in problems) and any("table.table" in p for p in problems)
