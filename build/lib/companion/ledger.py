r"""The claims ledger: every quantitative claim of the paper and of the book, with what was measured.

Nothing here is typed in: each :class:`Row` names the chapter whose executed reference notebook
(``book/NN_name.ipynb``) holds the numbers as MyST-NB ``glue`` outputs, and the glue keys of the
measured value, its interval, the theoretical value and, where the chapter states one, the
chapter's own verdict. :func:`glued` reads them back from the notebooks (myst-nb stores a glued
value as a ``display_data`` output whose metadata carries ``scrapbook.name`` and whose data holds
``application/papermill.record/text/plain``, the value's repr). :func:`evaluate` computes each
row's verdict from those numbers and the row's tolerance rule; the test suite checks that it
agrees with the chapter's glued verdict and that every key exists.

Verdicts: ``holds`` (the theoretical value is within the tolerance), ``misses`` (it is not),
``not measured`` (a key is missing: the chapter did not produce the number; the tests flag it).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

BOOK = Path(__file__).resolve().parents[1] / "book"

#: Source tags (see the page "The paper's results in one place").
SOURCES = ("abstract", "authors", "summary", "derived", "unknown")


@dataclass(frozen=True)
class Row:
    r"""One quantitative claim.

    Attributes:
        claim: the claim in words.
        source: where the claim comes from (one of :data:`SOURCES`, several joined by " + ").
        chapter: the notebook stem holding the glue (e.g. ``"05_sgd"``).
        section: the page anchor to link (a MyST label or the chapter file).
        measured: glue key of the measured value.
        theory: glue key of the theoretical value, or a number given as a string key ``"=3"`` for
            a constant of the derivation (an exponent such as k* - 1 = 3, not a result).
        low, high: glue keys of the measured value's interval (None: no interval).
        error: glue key of a ± half-width, used with ``rule="within_error"``.
        rule: the tolerance: ``"interval"`` (theory inside [low, high]), ``"within_error"``
            (:math:`|\text{measured} - \text{theory}| \le` error), ``"ratio"``
            (:math:`|\text{measured}/\text{theory} - 1| \le` ``tolerance``),
            ``"at_most"`` (:math:`|\text{measured} - \text{theory}| \le` ``tolerance``).
        tolerance: relative tolerance for ``rule="ratio"``.
        why: why that tolerance is honest.
        scale: the setting the number was measured at (d, P, m, method), from the chapter's presets.
        chapter_verdict: glue key of the chapter's own verdict word, if it glues one.
        verdict_words: how the chapter's words map to holds/misses.
    """

    claim: str
    source: str
    chapter: str
    section: str
    measured: str
    theory: str
    rule: str
    why: str
    scale: str
    low: str | None = None
    high: str | None = None
    error: str | None = None
    tolerance: float | None = None
    chapter_verdict: str | None = None
    verdict_words: dict = field(
        default_factory=lambda: {
            "inside": "holds",
            "within": "holds",
            "yes": "holds",
            "outside": "misses",
            "no": "misses",
        }
    )

    def keys(self) -> list[str]:
        """Every glue key the row reads."""
        keys = [self.measured, self.low, self.high, self.error, self.chapter_verdict]
        if not self.theory.startswith("="):
            keys.append(self.theory)
        return [k for k in keys if k]


#: Chapter 6 ("scaling") is being rewritten: its rows name the glue keys the rewrite is asked to
#: provide; until it does, they evaluate to "not measured" and the test lists the missing keys.
ROWS: tuple[Row, ...] = (
    Row(
        "The blow-up time T = 1/(8 a s0) predicts the full flow's escape (one neuron)",
        "summary + derived",
        "03_emergence",
        "chapter-emergence",
        measured="single_T_flow",
        theory="single_T",
        rule="ratio",
        tolerance=0.05,
        why="T is the leading-order blow-up; the exact single-neuron ODE crosses 1/2 a few "
        "percent later at s0 ~ 0.01 (the chapter's table), so 5% is the size of the neglected terms",
        scale="d = 256, P = 32, m = 64, population gradient flow (Tsit5)",
    ),
    Row(
        "The loss is the staircase sum of unlearned directions (away from the steps)",
        "derived",
        "03_emergence",
        "chapter-emergence",
        measured="super_median",
        theory="=0",
        rule="at_most",
        tolerance=0.05,
        why="median relative deviation of the loss from the staircase sum at record times away from every "
        "escape; the sum ignores the neurons' residual norms, and 5% is the tolerance fixed before measuring",
        scale="d = 256, P = 32, m = 64, gradient flow",
    ),
    Row(
        "Emergence sharpens: relative jump window ~ 1/d (halves per doubling of d)",
        "derived",
        "03_emergence",
        "chapter-emergence",
        measured="window_ratio",
        theory="=0.25",
        rule="ratio",
        tolerance=0.25,
        why="from d = 128 to 512 a window ~ 13 s0 falls 4x only if the winners' s0 does; their median s0 "
        "falls by a factor near 0.28 in the chapter's table (greedy winners of different directions), so "
        "25% is the size of that effect, not of the window law",
        scale="d = 128..512, P = 32, m = 64, gradient flow",
    ),
    Row(
        "Online SGD's escape-time deviation from the flow shrinks like sqrt(eta)",
        "derived",
        "05_sgd",
        "chapter-sgd",
        measured="sgd_shrink",
        theory="=2",
        rule="ratio",
        tolerance=0.35,
        why="three initializations x eight directions: the median deviation's own sampling error is about a "
        "third (the chapter reads it as a trend, not a fit)",
        scale="d = 64, P = 8, m = 16, online SGD B = 1 at eta0, eta0/4",
    ),
    Row(
        "Samples to escape, minimized over the learning rate, grow like d^(k*-1) = d^3",
        "summary + derived",
        "05_sgd",
        "chapter-sgd",
        measured="sx_exponent",
        theory="=3",
        low="sx_lo",
        high="sx_hi",
        rule="interval",
        chapter_verdict="sx_within",
        why="90% bootstrap over independent students; the minimum over a rate grid is not set by the design",
        scale="d = 16..64, one direction, 8 students of 8 neurons, online SGD B = 64, rates edge/2..edge/32",
    ),
    Row(
        "Time law: L(t) ~ t^((1-2beta)/beta)",
        "summary + derived",
        "06_scaling_laws",
        "chapter-scaling",
        measured="time_slope",
        theory="time_exp_08",
        error="time_tolerance",
        rule="within_error",
        chapter_verdict="time_verdict",
        why="chapter 6's stated tolerance",
        scale="chapter 6's width sweep",
    ),
    Row(
        "Width law: L ~ m^(1-2beta)",
        "summary + derived",
        "06_scaling_laws",
        "chapter-scaling",
        measured="width_slope",
        theory="width_exp_08",
        error="width_tolerance",
        rule="within_error",
        chapter_verdict="width_verdict",
        why="chapter 6's stated tolerance",
        scale="chapter 6's width sweep",
    ),
    Row(
        "Compute frontier: L ~ (mt)^((1-2beta)/(1+beta)) (-1/3 at beta = 0.8)",
        "summary + derived",
        "06_scaling_laws",
        "chapter-scaling",
        measured="frontier_slope",
        theory="compute_exp_08",
        error="frontier_tolerance",
        rule="within_error",
        chapter_verdict="frontier_verdict",
        why="chapter 6's stated tolerance",
        scale="chapter 6's width sweep",
    ),
    Row(
        "Each direction's learning time predicted from the initialization (greedy selection + refined escapes)",
        "derived",
        "06_scaling_laws",
        "sec-scaling-prediction",
        measured="ch6_time_ratio_median",
        theory="=1",
        rule="ratio",
        tolerance=0.05,
        chapter_verdict="ch6_time_ratio_verdict",
        why="median over every direction, width and seed; 5% fixed before comparing (issue target)",
        scale="d = 256, P = 128, widths 8-256, 2 seeds, gradient descent",
    ),
    Row(
        "Frontier slope predicted from the initialization matches the measured one",
        "derived",
        "06_scaling_laws",
        "sec-scaling-prediction",
        measured="ch6_frontier_meas",
        theory="ch6_frontier_pred",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_frontier_pred_verdict",
        why="seed spread of the measured slope is about 0.02; 0.03 fixed before comparing (issue target)",
        scale="d = 256, P = 128, widths 8-256, 2 seeds, gradient descent",
    ),
    Row(
        "Frontier slope predicted from the initialization matches the measured one, at d = 512 (committed run)",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_medium_frontier_num",
        theory="ch6_medium_frontier_pred_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_medium_verdict",
        why="the same 0.03 fixed before comparing at d = 256; one seed, so no spread is measured at this size",
        scale="d = 512, P = 256, widths 16-512, 1 seed, gradient descent (committed result)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches the measured one, at d = 1024 (committed run)",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_large_frontier_num",
        theory="ch6_large_frontier_pred_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_large_verdict",
        why="the same 0.03 fixed before comparing at d = 256; one seed, so no spread is measured at this size",
        scale="d = 1024, P = 512, widths 32-1024, 1 seed, gradient descent (committed result, the largest GD sweep run)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches online SGD, at d = 32",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_sgd_book_frontier_num",
        theory="ch6_sgdpred_book_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_sgd_book_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 32, P = 16, online SGD (committed result)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches gradient descent (the SGD sweep's twin), at d = 32",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_gdtwin_book_frontier_num",
        theory="ch6_sgdpred_book_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_gdtwin_book_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 32, P = 16, gradient descent on the same initializations (executed)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches online SGD, at d = 64",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_sgd_medium_frontier_num",
        theory="ch6_sgdpred_medium_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_sgd_medium_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 64, P = 32, online SGD (committed result)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches gradient descent (the SGD sweep's twin), at d = 64",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_gdtwin_medium_frontier_num",
        theory="ch6_sgdpred_medium_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_gdtwin_medium_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 64, P = 32, gradient descent on the same initializations (executed)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches online SGD, at d = 128",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_sgd_large_frontier_num",
        theory="ch6_sgdpred_large_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_sgd_large_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 128, P = 64, online SGD (committed result)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches gradient descent (the SGD sweep's twin), at d = 128",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_gdtwin_large_frontier_num",
        theory="ch6_sgdpred_large_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_gdtwin_large_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 128, P = 64, gradient descent on the same initializations (executed)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches online SGD, at d = 256",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_sgd_xlarge_frontier_num",
        theory="ch6_sgdpred_xlarge_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_sgd_xlarge_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed, so no spread is measured at this size",
        scale="d = 256, P = 128, widths 8-256, online SGD (committed result, the largest SGD sweep run)",
    ),
    Row(
        "Frontier slope predicted from the initialization matches gradient descent, at d = 256, seed 0 (the SGD sweep's twin)",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_gdtwin_xlarge_frontier_num",
        theory="ch6_sgdpred_xlarge_frontier_num",
        rule="at_most",
        tolerance=0.03,
        chapter_verdict="ch6_gdtwin_xlarge_verdict",
        why="the 0.03 target fixed before comparing (issue target); one seed (the executed sweep's seed 0)",
        scale="d = 256, P = 128, gradient descent (the executed sweep's seed 0)",
    ),
    Row(
        "Step curves from the measured learning times reproduce the measured frontier (the transition shape is not what makes a frontier miss)",
        "derived",
        "06_scaling_laws",
        "sec-scaling-miss",
        measured="ch6_oracle_gap_max",
        theory="=0",
        rule="at_most",
        tolerance=0.01,
        why="a third of the 0.03 frontier target: the attribution explains misses of 0.03 to 0.08 only if its own residual is well below them; largest over the executed GD sweeps",
        scale="d = 32, 64, 128 (GD twins of the SGD sweeps) and 256 (the executed sweep), gradient descent",
    ),
    Row(
        "Width-dependent prediction of the frontier at the paper's scale against (1-2beta)/(1+beta)",
        "derived",
        "06_scaling_laws",
        "sec-scaling-every-scale",
        measured="ch6_paper_frontier_pred",
        theory="compute_exp_08",
        rule="at_most",
        tolerance=0.05,
        why="the issue's 0.05 closeness target; prediction spread over 3 seeds is glued beside it",
        scale="d = 2048, P = 1024, prediction only (no training), 3 seeds",
    ),
    Row(
        "Unstable rate: samples to the top direction shrink by a_P*/a_min",
        "derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="gain_top1",
        theory="gain_pred1",
        rule="ratio",
        tolerance=0.3,
        why="both runs scatter around the flow's escape time by tens of percent at these rates (measured in "
        "the chapter)",
        scale="d = 32, P = 16, m = 32, online SGD B = 32, 8 streams",
    ),
    Row(
        "Tracking deviation grows like sqrt(overdrive): exponent 1/2",
        "derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="dev_slope",
        theory="=0.5",
        low="dev_lo",
        high="dev_hi",
        rule="interval",
        chapter_verdict="dev_within",
        why="90% bootstrap over the bins; every escape counted",
        scale="d = 32, P = 16, m = 32, online SGD B = 32, 8 streams",
    ),
    Row(
        "Fixed rate: loss ~ n^((1-2beta)/beta)",
        "summary + derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="fixed_slope",
        theory="time_exp",
        low="fixed_lo",
        high="fixed_hi",
        rule="interval",
        chapter_verdict="fixed_verdict",
        why="90% bootstrap over the points (understates correlated errors)",
        scale="d = 32, P = 16, m = 32, online SGD B = 32, stable rule",
    ),
    Row(
        "Unstable rule: loss ~ n^((1-2beta)/(2beta)) (Gaussian-sequence minimax)",
        "summary + derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="rule_slope",
        theory="unstable_exp",
        low="rule_lo",
        high="rule_hi",
        rule="interval",
        chapter_verdict="rule_verdict",
        why="90% bootstrap over four points: wide, and the points' x are set by the rule",
        scale="d = 32, P = 16, m = 32, online SGD B = 32, P* = 1..8",
    ),
    Row(
        "Envelope over rates: loss ~ n^((1-2beta)/(2beta))",
        "derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="env_slope",
        theory="unstable_exp",
        low="env_lo",
        high="env_hi",
        rule="interval",
        chapter_verdict="env_vs_unstable",
        why="90% bootstrap over the envelope's points in a window fixed in advance",
        scale="d = 32, P = 16, m = 32, online SGD B = 32, best of 5 rates",
    ),
    Row(
        "Tracking deviation grows like sqrt(overdrive): exponent 1/2, at d = 64 (committed run)",
        "derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="m_dev_value",
        theory="=0.5",
        low="m_dev_lo",
        high="m_dev_hi",
        rule="interval",
        chapter_verdict="m_dev_verdict",
        why="90% bootstrap over the bins; every escape counted",
        scale="d = 64, P = 16, m = 32, online SGD B = 64, 8 streams (committed result)",
    ),
    Row(
        "Fixed rate: loss ~ n^((1-2beta)/beta), at d = 64 (committed run)",
        "summary + derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="m_stablefit_value",
        theory="time_exp",
        low="m_stablefit_lo",
        high="m_stablefit_hi",
        rule="interval",
        chapter_verdict="m_stablefit_verdict",
        why="90% bootstrap over the points (understates correlated errors)",
        scale="d = 64, P = 16, m = 32, online SGD B = 64, stable rule (committed result)",
    ),
    Row(
        "Unstable rule: loss ~ n^((1-2beta)/(2beta)), at d = 64 (committed run)",
        "summary + derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="m_rulefit_value",
        theory="unstable_exp",
        low="m_rulefit_lo",
        high="m_rulefit_hi",
        rule="interval",
        chapter_verdict="m_rulefit_verdict",
        why="90% bootstrap over four points: wide, and the points' x are set by the rule",
        scale="d = 64, P = 16, m = 32, online SGD B = 64, P* = 1..8 (committed result)",
    ),
    Row(
        "Envelope over rates: loss ~ n^((1-2beta)/(2beta)), at d = 64 (committed run)",
        "derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="m_envfit_value",
        theory="unstable_exp",
        low="m_envfit_lo",
        high="m_envfit_hi",
        rule="interval",
        chapter_verdict="m_envfit_verdict",
        why="90% bootstrap over the envelope's points in a window fixed in advance",
        scale="d = 64, P = 16, m = 32, online SGD B = 64, best of 5 rates (committed result)",
    ),
    Row(
        "Label noise: loss floor eta sigma^2 d / B sum a_p (sigma_eps = 1)",
        "derived",
        "09_assumptions",
        "chapter-assumptions",
        measured="floor_meas_1",
        theory="floor_pred_1",
        rule="ratio",
        tolerance=0.5,
        why="a linearized leading-order estimate: an order-one factor is expected (the chapter says so)",
        scale="d = 64, online SGD B = 16, half the stability edge, 2 seeds",
    ),
    Row(
        "Envelope over rates vs the fixed-rate exponent (1-2beta)/beta",
        "derived",
        "07_unstable_lr",
        "chapter-unstable",
        measured="env_slope",
        theory="time_exp",
        low="env_lo",
        high="env_hi",
        rule="interval",
        chapter_verdict="env_vs_time",
        why="the same envelope fit; tells which of the two laws the best rate of the grid follows",
        scale="d = 32, P = 16, m = 32, online SGD B = 32, best of 5 rates",
    ),
    Row(
        "Time law with h4 (chapter 9's own small teacher)",
        "summary + derived",
        "09_assumptions",
        "chapter-assumptions",
        measured="exp_h4",
        theory="theory_time_exp",
        rule="ratio",
        tolerance=0.1,
        why="10% of the exponent, about the seed spread chapter 9 prints for this fit (it does not glue the "
        "spread; the row should use it once it does)",
        scale="chapter 9's activation experiment, gradient flow",
    ),
    Row(
        "Noiseless SGD control of the label-noise experiment follows the time law",
        "summary + derived",
        "09_assumptions",
        "chapter-assumptions",
        measured="noise_exp_0",
        theory="theory_time_exp",
        rule="ratio",
        tolerance=0.1,
        why="the same 10% as the flow's fit; the chapter reports the miss and that its cause was not measured",
        scale="chapter 9's label-noise experiment, online SGD B = 16, half the edge",
    ),
)


def _value(text: str):
    """A glued repr (``"'-0.79'"``) as its Python value (a str here)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def glued(chapter: str, book: Path = BOOK) -> dict[str, str]:
    """Every glue key → value (as the chapter formatted it) in ``book/<chapter>.ipynb``."""
    path = Path(book) / f"{chapter}.ipynb"
    if not path.exists():
        return {}
    notebook = json.loads(path.read_text())
    out = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            data = output.get("data", {})
            if name and "application/papermill.record/text/plain" in data:
                out[name] = str(_value("".join(data["application/papermill.record/text/plain"])))
    return out


def number(text: str) -> float:
    """The first number in a glued string (``"-0.79"``, ``"14%"`` → 0.14, ``"1.4e-02"``)."""
    match = re.search(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text.replace(",", ""))
    if match is None:
        raise ValueError(f"no number in glued value {text!r}")
    value = float(match.group(0))
    return value / 100 if text.strip().endswith("%") else value


@dataclass(frozen=True)
class Entry:
    """A row evaluated: the numbers read back, the verdict, and what was missing."""

    row: Row
    theory: float | None
    measured: float | None
    low: float | None
    high: float | None
    error: float | None
    verdict: str
    chapter_verdict: str | None
    missing: tuple[str, ...]


def evaluate(row: Row, values: dict[str, str]) -> Entry:
    """Evaluate one row against the glue of its chapter (``values``, from :func:`glued`)."""
    missing = tuple(k for k in row.keys() if k not in values)

    def get(k: str | None) -> float | None:
        return None if k is None or k not in values else number(values[k])

    theory = float(row.theory[1:]) if row.theory.startswith("=") else get(row.theory)
    measured, low, high, error = get(row.measured), get(row.low), get(row.high), get(row.error)
    chapter = values.get(row.chapter_verdict) if row.chapter_verdict else None
    chapter = row.verdict_words.get(chapter, chapter) if chapter is not None else None
    needed = [row.measured] + ([row.low, row.high] if row.rule == "interval" else [])
    needed += [row.error] if row.rule == "within_error" else []
    needed += [] if row.theory.startswith("=") else [row.theory]
    if any(k not in values for k in needed):
        return Entry(row, theory, measured, low, high, error, "not measured", chapter, missing)
    if row.rule == "interval":
        assert low is not None and high is not None and theory is not None
        ok = min(low, high) <= theory <= max(low, high)
    elif row.rule == "within_error":
        assert measured is not None and theory is not None and error is not None
        ok = abs(measured - theory) <= error
    elif row.rule == "ratio":
        assert measured is not None and theory is not None
        ok = abs(measured / theory - 1) <= cast(float, row.tolerance)
    elif row.rule == "at_most":
        assert measured is not None and theory is not None
        ok = abs(measured - theory) <= cast(float, row.tolerance)
    else:
        raise ValueError(f"row {row.claim!r}: unknown rule {row.rule!r}")
    return Entry(row, theory, measured, low, high, error, "holds" if ok else "misses", chapter, missing)


def ledger(book: Path = BOOK, rows: tuple[Row, ...] = ROWS) -> list[Entry]:
    """Every row evaluated against the committed reference notebooks."""
    cache: dict[str, dict[str, str]] = {}
    return [evaluate(r, cache.setdefault(r.chapter, glued(r.chapter, book))) for r in rows]


def tolerance_text(entry: Entry) -> str:
    """The tolerance rule in words, with its numbers."""
    r = entry.row
    if r.rule == "interval":
        return "theory inside the measured interval"
    if r.rule == "within_error":
        return "|measured − theory| ≤ " + (f"{entry.error:g}" if entry.error is not None else cast(str, r.error))
    if r.rule == "at_most":
        return f"|measured − theory| ≤ {r.tolerance:g}"
    return f"|measured / theory − 1| ≤ {r.tolerance:g}"


def table_rows(entries: list[Entry]) -> list[list[str]]:
    """Rows for a Markdown table: claim, source, theory, measured (interval), scale, tolerance and
    why, verdict, link."""

    def show(x):
        return "—" if x is None else f"{x:.3g}"

    out = []
    for e in entries:
        measured = show(e.measured)
        if e.low is not None and e.high is not None:
            measured += f" ({show(e.low)} to {show(e.high)})"
        elif e.error is not None:
            measured += f" ± {show(e.error)}"
        link = f"[{e.row.chapter}]({e.row.chapter}.md)"
        out.append(
            [
                e.row.claim,
                e.row.source,
                show(e.theory),
                measured,
                e.row.scale,
                f"{tolerance_text(e)}: {e.row.why}",
                e.verdict,
                link,
            ]
        )
    return out
