"""Small formatting helpers for chapters: they return strings, never print."""

from __future__ import annotations

from collections.abc import Sequence


def fmt(value, digits: int = 3) -> str:
    """A float rounded to ``digits`` significant digits, stable across machines for display."""
    return f"{float(value):.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], digits: int = 4) -> str:
    """A Markdown table; floats are shown with ``digits`` significant digits.

    Display it in a chapter with ``IPython.display.Markdown(markdown_table(...))``.
    """

    def cell(x):
        text = fmt(x, digits) if isinstance(x, float) else str(x)
        return text.replace("|", "\\|")  # a literal bar (|x|) must not split the cell

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def bound(value: float) -> str:
    """The smallest power of ten at or above ``|value|``, as text (``9.7e-11 -> "1e-10"``).

    Round-off-sized errors differ in their digits between machines; the bound does not (unless the
    error crosses a power of ten), so chapters report such errors as "below {bound}".
    """
    import math

    value = abs(float(value))
    if value == 0.0:
        return "0"
    return f"1e{math.ceil(math.log10(value)):d}"


def magnitude(value: float) -> str:
    """The power of ten nearest to ``value`` on a log scale, as text (``1.4e-3 -> "1e-3"``, ``4e-3 -> "1e-2"``).

    For quantities that move by tens of percent between runs that differ only in rounding (the end
    of a chaotic trajectory, such as Adam's loss floor): their order of magnitude is what another
    machine reproduces. ``make portability`` measures which printed values need it.
    """
    import math

    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"magnitude needs a finite positive value, got {value}")
    return f"1e{round(math.log10(value)):d}"
