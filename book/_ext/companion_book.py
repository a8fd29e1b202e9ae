"""Local Sphinx extension of the book: Plotly's JavaScript, and the API reference's docstrings.

Pages holding an interactive figure (``companion.interactive``, HTML with the class
``companion-interactive``) get ``_static/plotly.min.js`` in their head, and only those pages (it is
4.6 MB). The file is copied at build time from the installed ``plotly`` package, so it always
matches the pinned Python package that wrote the figures, needs no CDN (pages work offline), and
is not committed to the repository.

For the API reference (``book/api.md``, autodoc + napoleon) it also:

- keeps napoleon from reading the first words of a constant's ``#:`` comment as its type
  ("Named activations: ..." is prose, not a type);
- skips a named tuple's generated field members ("Alias for field number 0"): the class
  docstring's ``Attributes`` section documents each field once;
- resolves an unqualified reference in a docstring (``:class:`Cache```) to the package object of
  that name when exactly one exists (the docstrings name objects of sibling modules unqualified).
"""

from __future__ import annotations

import shutil
from pathlib import Path

PLOTLY_JS = "plotly.min.js"


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / PLOTLY_JS


def _add_plotly(app, pagename, templatename, context, doctree):
    if "companion-interactive" in context.get("body", ""):
        app.add_js_file(PLOTLY_JS, priority=300)


def _copy_plotly(app, exception):
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_plotly_js(), static / PLOTLY_JS)


_FIRST_LINES: dict[str, str] = {}


def _remember_first_line(app, what, name, obj, options, lines):
    if what in ("data", "attribute") and lines:
        _FIRST_LINES[name] = lines[0].strip()


def _restore_prose(app, what, name, obj, options, lines):
    """Undo napoleon's "type: description" split when the "type" was the comment's first words."""
    first = _FIRST_LINES.pop(name, "")
    types = [i for i, line in enumerate(lines) if line.startswith(":type: ")]
    if not types:
        return
    i = types[-1]
    prose = lines[i][len(":type: ") :]
    if first.startswith(prose + ":"):
        del lines[i]
        while lines and not lines[-1].strip():
            lines.pop()
        j = next((k for k, line in enumerate(lines) if line.strip()), None)
        if j is not None:
            lines[j] = f"{prose}: {lines[j].lstrip()}"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def _resolve_unqualified(app, env, node, contnode):
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target or "." in target or target.startswith("_"):
        return None
    domain = env.get_domain("py")
    matches = [name for name in domain.objects if name.startswith("companion.") and name.endswith("." + target)]
    if len(matches) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode)


def _hide_input_in_singlehtml(app):
    """myst-nb registers its folded-input node for the ``html`` builder only; once any extension
    registers nodes for ``singlehtml`` Sphinx no longer falls back to those, so register it there
    too (the single page printed to the PDF keeps plot-only code folded)."""
    from myst_nb.sphinx_ import HideCodeCellNode, depart_HideCellInput, visit_HideCellInput

    app.add_node(
        HideCodeCellNode,
        override=True,
        html=(visit_HideCellInput, depart_HideCellInput),
        singlehtml=(visit_HideCellInput, depart_HideCellInput),
    )


def setup(app):
    app.setup_extension("myst_nb")
    _hide_input_in_singlehtml(app)
    app.connect("autodoc-process-docstring", _remember_first_line, priority=400)  # before napoleon (500)
    app.connect("autodoc-process-docstring", _restore_prose, priority=600)  # after it
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("missing-reference", _resolve_unqualified)
    app.connect("html-page-context", _add_plotly)
    app.connect("build-finished", _copy_plotly)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
