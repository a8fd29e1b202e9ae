r"""Interactive figures for the static book: Plotly figures that need no kernel.

A reader of the rendered book has a browser, not a Python kernel. The builders here take grids
that the package computed when the book was built and return :class:`InteractiveFigure` objects:
a Plotly figure with every precomputed curve, plus HTML range sliders whose ``input`` events
switch which curves are visible (a few lines of JavaScript; no server). In a notebook the object
displays as a bundle of ``text/html`` (the interactive figure) and ``image/png`` (a still
matplotlib image of the same data): the HTML book shows the first, the PDF, LaTeX and nbval the
second. Plotly's JavaScript is not embedded; the book serves it from its own static files, so
pages work offline.

Builders:

- :func:`staircase_figure`: the introduction's idealized staircase of emergences turning into the
  power law :math:`t^{(1-2\beta)/\beta}`, one curve per :math:`(\beta, P)` (two sliders).
- :func:`sharpening_figure`: the exact single-neuron overlap :math:`s(t)` against
  :math:`t/T_{1/2}` for :math:`s_0 = \log m/d`, one curve per :math:`d` (one slider).
- :func:`frontier_figure`: loss against compute :math:`c = m\,t` for every width and seed of a
  width sweep, with the measured frontier and, when given, predicted curves (legend toggles
  widths, buttons toggle seeds, hover shows the values).

Plotly and matplotlib are needed here (the ``book`` extra), not by the rest of the package.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .scaling import idealized_escape_times, superposition_loss, time_exponent
from .teacher import power_law_coefficients

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "InteractiveFigure",
    "Slider",
    "frontier_figure",
    "h4_single_neuron_time",
    "sharpening_figure",
    "sharpening_grid",
    "staircase_figure",
    "staircase_grid",
]

#: Significant digits kept for plotted values (keeps the page small; far below screen resolution).
DIGITS = 4


def _round(x) -> list:
    """Values rounded to :data:`DIGITS` significant digits, as a JSON-friendly list (nan -> None)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.vectorize(lambda v: float(f"{v:.{DIGITS}g}") if np.isfinite(v) else None, otypes=[object])(x)
    return out.tolist()


@dataclass(frozen=True)
class Slider:
    """One HTML range control: ``label`` shown with the current value, stepping through ``values``.

    Attributes:
        name: identifier (letters, digits, ``_``).
        label: text before the value, e.g. ``"β"``.
        values: the values it steps through, in order (display strings are ``f"{v:g}"``).
        start: index of the initial value.
    """

    name: str
    label: str
    values: tuple
    start: int = 0

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"name must be an identifier, got {self.name!r}")
        if len(self.values) < 2:
            raise ValueError(f"values of slider {self.name!r} must hold at least 2 entries, got {len(self.values)}")
        if not 0 <= self.start < len(self.values):
            raise ValueError(f"start must be in [0, {len(self.values) - 1}], got {self.start}")


@dataclass
class InteractiveFigure:
    """A Plotly figure with optional sliders, displayed as HTML (interactive) and PNG (still).

    Attributes:
        figure: the ``plotly.graph_objects.Figure`` holding every curve.
        name: a stable identifier (the HTML element ids derive from it, so re-executing a notebook
            gives the same HTML).
        sliders: the controls; empty for a figure without sliders.
        visibility: for each combination of slider indices (a tuple, one index per slider), the
            ``visible`` flag of every trace.
        titles: for each combination, the figure's title text (optional).
        still: PNG bytes of a still image of the same data (for the PDF and nbval), or ``None``.
    """

    figure: go.Figure
    name: str
    sliders: Sequence[Slider] = ()
    visibility: dict = field(default_factory=dict)
    titles: dict = field(default_factory=dict)
    still: bytes | None = None

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.name):
            raise ValueError(f"name must be lower-case letters, digits and '-', got {self.name!r}")
        n = len(self.figure.data)
        combos = set(itertools.product(*(range(len(s.values)) for s in self.sliders))) if self.sliders else set()
        if self.sliders and set(self.visibility) != combos:
            raise ValueError("visibility must give one entry per combination of slider indices")
        for key, flags in self.visibility.items():
            if len(flags) != n:
                raise ValueError(f"visibility[{key}] has {len(flags)} flags for {n} traces")
        if self.sliders:  # the figure starts in the sliders' initial state
            for trace, flag in zip(self.figure.data, self.visibility[self.start()], strict=False):
                trace.visible = flag
            if self.titles:
                self.figure.update_layout(title_text=self.titles[self.start()])

    def start(self) -> tuple[int, ...]:
        return tuple(s.start for s in self.sliders)

    def to_html(self) -> str:
        """The figure's HTML fragment: controls, Plotly ``div`` and the script wiring them."""
        uid = f"companion-{self.name}"
        plot = self.figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"{uid}-plot",
            config={"responsive": True, "displaylogo": False},
        )
        controls = "".join(
            f'<label class="companion-control">{html.escape(s.label)} = '
            f'<output data-for="{s.name}">{html.escape(f"{s.values[s.start]:g}")}</output>'
            f'<input type="range" name="{s.name}" min="0" max="{len(s.values) - 1}" step="1" value="{s.start}" '
            f'aria-label="{html.escape(s.label)}"></label>'
            for s in self.sliders
        )
        script = ""
        if self.sliders:
            table = {",".join(map(str, k)): v for k, v in self.visibility.items()}
            titles = {",".join(map(str, k)): v for k, v in self.titles.items()}
            labels = {s.name: [f"{v:g}" for v in s.values] for s in self.sliders}
            script = (
                "<script>(function(){"
                f"var root=document.getElementById({json.dumps(uid)});"
                f"var plot=document.getElementById({json.dumps(uid + '-plot')});"
                f"var vis={json.dumps(table)},titles={json.dumps(titles)},labels={json.dumps(labels)};"
                "var inputs=Array.prototype.slice.call(root.querySelectorAll('input[type=range]'));"
                "function update(){"
                "var key=inputs.map(function(i){return i.value;}).join(',');"
                "inputs.forEach(function(i){root.querySelector('output[data-for='+i.name+']').textContent=labels[i.name][+i.value];});"
                "if(!window.Plotly||!vis[key])return;"
                "Plotly.restyle(plot,{visible:vis[key]});"
                "if(titles[key])Plotly.relayout(plot,{'title.text':titles[key]});"
                "root.setAttribute('data-state',key);}"
                "inputs.forEach(function(i){i.addEventListener('input',update);});"
                "})();</script>"
            )
        state = ",".join(map(str, self.start()))
        return (
            f'<div class="companion-interactive" id="{uid}" data-state="{state}">'
            f'<div class="companion-controls">{controls}</div>{plot}{script}</div>'
        )

    def _repr_mimebundle_(self, include=None, exclude=None):
        title = self.figure.layout.title.text or self.name
        bundle = {"text/html": self.to_html(), "text/plain": f"<interactive figure: {title}>"}
        if self.still is not None:
            bundle["image/png"] = base64.b64encode(self.still).decode("ascii")
        return bundle


def still_image(fig) -> bytes:
    """PNG bytes of a matplotlib figure, which is then closed (so it is not displayed twice)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def _layout(fig, xtitle: str, ytitle: str, log_x: bool = True, log_y: bool = True) -> None:
    fig.update_layout(
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        hovermode="closest",
        xaxis={"title": xtitle, "type": "log" if log_x else "linear", "exponentformat": "power"},
        yaxis={"title": ytitle, "type": "log" if log_y else "linear", "exponentformat": "power"},
        paper_bgcolor="white",
        plot_bgcolor="white",
    )


# ----------------------------------------------------------------------------------------------
# The introduction: a staircase of emergences turning into a power law
# ----------------------------------------------------------------------------------------------


def staircase_grid(betas: Sequence[float], Ps: Sequence[int], points: int = 300) -> dict:
    r"""Idealized loss curves :math:`\tfrac12\sum_p a_p^2\,\mathbf 1\{t < T_p\}`, :math:`T_p = 1/a_p`.

    For every :math:`(\beta, P)`: the log-spaced times ``t`` (from :math:`10^{-0.5}` to
    :math:`3\,T_P`), the loss (:func:`companion.scaling.superposition_loss` with
    :func:`companion.scaling.idealized_escape_times`) and the reference power law
    :math:`t^{(1-2\beta)/\beta}` through the loss at :math:`t = 10`.

    Returns:
        ``{(beta, P): (t, loss, reference, first)}``: ``t``, ``loss``, ``reference`` of shape
        (points,), and ``first`` the first four escape times :math:`T_1..T_4`.
    """
    if not betas or not Ps:
        raise ValueError("betas and Ps must be non-empty")
    grid = {}
    for beta in betas:
        if not 0.5 < float(beta) <= 3:
            raise ValueError(f"betas must lie in (0.5, 3] (a decaying power law), got {beta}")
        for P in Ps:
            if int(P) != P or P < 2:
                raise ValueError(f"Ps must be integers >= 2, got {P}")
            a = power_law_coefficients(int(P), float(beta))
            T = idealized_escape_times(a)
            t = np.logspace(-0.5, np.log10(T.max()) + 0.5, points)
            loss = superposition_loss(a, T, t)
            ref = loss[np.searchsorted(t, 10.0)] * (t / 10.0) ** time_exponent(float(beta))
            grid[(float(beta), int(P))] = (t, loss, ref, T[:4])
    return grid


def staircase_figure(grid: dict, start: tuple[float, int] | None = None, still=None) -> InteractiveFigure:
    """Interactive staircase: sliders over β and P select one precomputed curve of ``grid``.

    Args:
        grid: the output of :func:`staircase_grid`.
        start: the initially shown ``(beta, P)`` (default: the first key).
        still: a matplotlib figure of the same picture for the PDF (closed here), or ``None``.
    """
    import plotly.graph_objects as go

    betas = sorted({b for b, _ in grid})
    Ps = sorted({P for _, P in grid})
    if set(grid) != set(itertools.product(betas, Ps)):
        raise ValueError("grid must hold every combination of its betas and Ps")
    start = start if start is not None else next(iter(grid))
    if start not in grid:
        raise ValueError(f"start must be a key of grid, got {start}")
    fig = go.Figure()
    keys = list(itertools.product(betas, Ps))
    for beta, P in keys:
        t, loss, ref, first = grid[(beta, P)]
        clip = ref >= 0.25 * loss[loss > 0].min()
        fig.add_trace(
            go.Scatter(
                x=_round(np.repeat(first, 3)),
                y=[1e-9, 1.0, None] * len(first),
                mode="lines",
                line={"color": "#ff7f0e", "width": 0.8},
                opacity=0.6,
                name="first four emergences",
                hovertemplate="T = %{x:.3g}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=_round(t),
                y=_round(loss),
                mode="lines",
                line={"color": "#1f77b4", "shape": "hv"},
                name="sum of emergences",
                hovertemplate="t = %{x:.3g}<br>loss = %{y:.3g}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=_round(t[clip]),
                y=_round(ref[clip]),
                mode="lines",
                line={"color": "black", "dash": "dash", "width": 1},
                name=f"power law t^({time_exponent(beta):.2f})",
                hoverinfo="skip",
            )
        )
    _layout(fig, "training time t", "loss")
    floor = min(g[1][g[1] > 0].min() for g in grid.values())
    fig.update_yaxes(range=[np.log10(0.25 * floor), 0])
    index = {k: i for i, k in enumerate(keys)}
    visibility, titles = {}, {}
    for bi, beta in enumerate(betas):
        for pi, P in enumerate(Ps):
            flags = [False] * (3 * len(keys))
            first = 3 * index[(beta, P)]
            flags[first : first + 3] = [True] * 3
            visibility[(bi, pi)] = flags
            titles[(bi, pi)] = f"β = {beta:g}, P = {P}: slope {time_exponent(beta):.2f} on log-log axes"
    sliders = (
        Slider("beta", "β", tuple(betas), betas.index(start[0])),
        Slider("P", "P", tuple(Ps), Ps.index(start[1])),
    )
    return InteractiveFigure(
        fig, "staircase", sliders, visibility, titles, still_image(still) if still is not None else None
    )


# ----------------------------------------------------------------------------------------------
# Chapter 3: emergence sharpens with the dimension
# ----------------------------------------------------------------------------------------------


def h4_single_neuron_time(s, s0, a: float | np.ndarray = 1.0) -> np.ndarray:
    r"""Time at which a lone :math:`h_4` neuron's overlap reaches ``s``: the exact closed form.

    Integrating :math:`\dot s = 8as^2(1-s)` from :math:`s_0`:
    :math:`t(s) = \frac1{8a}\big[\frac1{s_0} - \frac1s + \log\frac{s(1-s_0)}{s_0(1-s)}\big]`
    (the :math:`h_4` case of :func:`companion.dynamics.single_neuron_crossing_time`, which integrates
    numerically). Broadcasts; ``s`` and ``s0`` in (0, 1), ``a > 0``.
    """
    s, s0, a = (np.asarray(x, dtype=np.float64) for x in (s, s0, a))
    if np.any((s <= 0) | (s >= 1)) or np.any((s0 <= 0) | (s0 >= 1)):
        raise ValueError("s and s0 must lie in (0, 1)")
    if np.any(a <= 0):
        raise ValueError("a must be > 0")
    return (1 / s0 - 1 / s + np.log(s * (1 - s0) / (s0 * (1 - s)))) / (8 * a)


def sharpening_grid(ds: Sequence[int], m: int, points: int = 400) -> dict:
    r"""The exact single-neuron overlap :math:`s(t)` against :math:`t / T_{1/2}` for each dimension.

    The best initial overlap of :math:`m` random neurons in dimension :math:`d` is of order
    :math:`s_0 = \log m / d`; each curve starts there, and time is measured in units of its own
    escape time :math:`T_{1/2} = t(1/2)`. The relative window :math:`(t(0.9) - t(0.1))/T_{1/2}`
    (about :math:`13.3\,s_0`) is returned with it.

    Returns:
        ``{d: (t / T_half, s, window)}`` with arrays of shape (points,) and a float.
    """
    if m < 2:
        raise ValueError(f"m must be >= 2, got {m}")
    grid = {}
    for d in ds:
        s0 = np.log(m) / d
        if not 0 < s0 < 0.1:
            raise ValueError(f"ds must make log(m)/d lie in (0, 0.1), got d = {d} (s0 = {s0:.3g})")
        s = np.concatenate(
            [np.geomspace(s0 * 1.0001, 0.5, points // 2, endpoint=False), np.linspace(0.5, 0.999, points - points // 2)]
        )
        half = h4_single_neuron_time(0.5, s0)
        window = float((h4_single_neuron_time(0.9, s0) - h4_single_neuron_time(0.1, s0)) / half)
        grid[int(d)] = (h4_single_neuron_time(s, s0) / half, s, window)
    return grid


def sharpening_figure(grid: dict, start: int | None = None, still=None) -> InteractiveFigure:
    """Interactive sharpening: a slider over d shows the overlap curve against time / escape time.

    Args:
        grid: the output of :func:`sharpening_grid`.
        start: the initially shown d (default: the smallest).
        still: a matplotlib figure of the same picture for the PDF (closed here), or ``None``.
    """
    import plotly.graph_objects as go

    ds = sorted(grid)
    start = ds[0] if start is None else start
    if start not in grid:
        raise ValueError(f"start must be one of {ds}, got {start}")
    fig = go.Figure()
    for d in ds:
        x, s, _ = grid[d]
        fig.add_trace(
            go.Scatter(
                x=_round(x),
                y=_round(s),
                mode="lines",
                line={"color": "#1f77b4", "width": 2.5},
                name=f"d = {d}",
                hovertemplate="t / T = %{x:.3f}<br>overlap² = %{y:.3f}<extra></extra>",
            )
        )
    for level in (0.1, 0.9):
        fig.add_hline(y=level, line={"color": "grey", "width": 0.8, "dash": "dot"})
    _layout(fig, "time / escape time", "overlap² s", log_x=False, log_y=False)
    fig.update_layout(showlegend=False)
    fig.update_xaxes(range=[0, 1.3])
    fig.update_yaxes(range=[0, 1])
    visibility = {(i,): [j == i for j in range(len(ds))] for i in range(len(ds))}
    titles = {
        (i,): f"d = {d}: the jump from 0.1 to 0.9 takes {grid[d][2]:.3f} of the escape time" for i, d in enumerate(ds)
    }
    sliders = (Slider("d", "d", tuple(ds), ds.index(start)),)
    return InteractiveFigure(
        fig, "sharpening", sliders, visibility, titles, still_image(still) if still is not None else None
    )


# ----------------------------------------------------------------------------------------------
# Chapter 6: the compute frontier
# ----------------------------------------------------------------------------------------------


def frontier_figure(
    times,
    loss,
    widths: Sequence[int],
    seeds: Sequence[int] | None = None,
    *,
    offset: float = 0.0,
    envelope: tuple | None = None,
    predicted=None,
    predicted_envelope: tuple | None = None,
    still=None,
    name: str = "frontier",
) -> InteractiveFigure:
    r"""Loss against compute :math:`c = m\,t` for every width and seed, with the frontier.

    Legend entries toggle widths (one legend group per width: measured and predicted together);
    the buttons above the plot show one seed or all; hovering shows width, seed, compute and loss.

    Args:
        times: (R,) record times.
        loss: (S, W, R) or (W, R) measured loss curves (e.g. ``SweepResult.loss``).
        widths: (W,) the widths m.
        seeds: (S,) seed labels (default ``0..S-1``).
        offset: added to every loss (e.g. the tail :math:`\tfrac12\sum_{p>P}a_p^2`).
        envelope: optional ``(grid, values)`` or ``(grid, values, label)``: the measured frontier.
        predicted: optional predicted loss curves of the same shape as ``loss`` (or (W, R)),
            drawn dashed (``offset`` added as well).
        predicted_envelope: optional ``(grid, values)`` or ``(grid, values, label)``: the predicted
            frontier, e.g. :math:`C\,c^{(1-2\beta)/(1+\beta)}`.
        still: a matplotlib figure of the same picture for the PDF (closed here), or ``None``.
        name: identifier of the HTML element.
    """
    import plotly.colors as pc
    import plotly.graph_objects as go

    t = np.asarray(times, dtype=np.float64)
    L = np.asarray(loss, dtype=np.float64)
    L = L[None] if L.ndim == 2 else L
    widths = [int(m) for m in widths]
    if L.ndim != 3 or L.shape[1:] != (len(widths), t.size):
        raise ValueError(
            f"loss must have shape (S, {len(widths)}, {t.size}) or ({len(widths)}, {t.size}), got {np.shape(loss)}"
        )
    S = L.shape[0]
    seeds = list(range(S)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != S:
        raise ValueError(f"seeds must have {S} entries, got {len(seeds)}")
    pred = None
    if predicted is not None:
        pred = np.asarray(predicted, dtype=np.float64)
        pred = np.broadcast_to(pred[None] if pred.ndim == 2 else pred, L.shape)
    colors = pc.sample_colorscale("Plasma", list(np.linspace(0, 0.85, len(widths))))
    fig = go.Figure()
    seed_of: list[int | None] = []  # seed index of each trace, or None for traces shown with every seed
    for s in range(S):
        for w, m in enumerate(widths):
            y = L[s, w] + offset
            ok = np.isfinite(y) & (y > 0)
            fig.add_trace(
                go.Scatter(
                    x=_round(m * t[ok]),
                    y=_round(y[ok]),
                    mode="lines",
                    line={"color": colors[w], "width": 1.5},
                    name=f"m = {m}",
                    legendgroup=f"m{m}",
                    showlegend=s == 0,
                    hovertemplate=f"m = {m}, seed {seeds[s]}<br>compute %{{x:.3g}}<br>loss %{{y:.3g}}<extra></extra>",
                )
            )
            seed_of.append(s)
            if pred is not None:
                yp = pred[s, w] + offset
                okp = np.isfinite(yp) & (yp > 0)
                fig.add_trace(
                    go.Scatter(
                        x=_round(m * t[okp]),
                        y=_round(yp[okp]),
                        mode="lines",
                        line={"color": colors[w], "width": 1, "dash": "dash"},
                        name=f"m = {m} predicted",
                        legendgroup=f"m{m}",
                        showlegend=False,
                        hovertemplate=f"m = {m}, seed {seeds[s]}, predicted<br>compute %{{x:.3g}}<br>loss %{{y:.3g}}<extra></extra>",
                    )
                )
                seed_of.append(s)
    for curve, style, default in (
        (envelope, {"color": "rgba(0,0,0,0.4)", "width": 4}, "measured frontier"),
        (predicted_envelope, {"color": "black", "width": 1.5, "dash": "dot"}, "predicted frontier"),
    ):
        if curve is None:
            continue
        grid, values, label = (*curve, default) if len(curve) == 2 else curve
        grid, values = np.asarray(grid, np.float64), np.asarray(values, np.float64)
        ok = np.isfinite(values) & (values > 0)
        fig.add_trace(
            go.Scatter(
                x=_round(grid[ok]),
                y=_round(values[ok]),
                mode="lines",
                line=style,
                name=label,
                hovertemplate=f"{label}<br>compute %{{x:.3g}}<br>loss %{{y:.3g}}<extra></extra>",
            )
        )
        seed_of.append(None)
    _layout(fig, "compute m·t", "loss" + (" + tail" if offset else ""))
    if S > 1:

        def shown(s):
            return [owner is None or s is None or owner == s for owner in seed_of]

        buttons = [{"label": "all seeds", "method": "restyle", "args": [{"visible": shown(None)}]}]
        buttons += [
            {"label": f"seed {seeds[s]}", "method": "restyle", "args": [{"visible": shown(s)}]} for s in range(S)
        ]
        fig.update_layout(
            updatemenus=[
                {
                    "type": "buttons",
                    "direction": "right",
                    "buttons": buttons,
                    "x": 0,
                    "y": 1.12,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "showactive": True,
                }
            ]
        )
    fig.update_layout(
        title_text="loss against compute: every width, the frontier"
        + (", predicted (dashed)" if pred is not None else "")
    )
    return InteractiveFigure(fig, name, still=still_image(still) if still is not None else None)
