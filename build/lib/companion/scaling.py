r"""How many emergences add up to a scaling law: superposition, exponents, fits, frontiers.

If direction p is learned abruptly at its escape time :math:`T_p` and then contributes nothing
(automatic deflation), the population loss is a superposition of steps

.. math::
    \mathcal L(t) \approx \tfrac12\,\mathbb E[\sigma^2] \sum_p a_p^2\, \mathbf 1\{t < T_p\}.

With :math:`a_p \propto p^{-\beta}` and :math:`T_p \propto 1/a_p`, the number of directions learned
by time t is :math:`N(t) \propto t^{1/\beta}` and :math:`\mathcal L(t) \propto N^{1-2\beta} \propto
t^{(1-2\beta)/\beta}`; a width-m student holds at most m directions, so
:math:`\mathcal L \gtrsim m^{1-2\beta}`; minimizing :math:`A m^{1-2\beta} + B t^{(1-2\beta)/\beta}` at
fixed compute :math:`mt` gives :math:`\mathcal L^* \propto (mt)^{(1-2\beta)/(1+\beta)}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from companion._validate import require_int, require_real

# ----------------------------------------------------------------------------------------------
# Superposition of emergences
# ----------------------------------------------------------------------------------------------


def superposition_loss(coefficients, escape_times, times, second_moment: float = 1.0) -> np.ndarray:
    r""":math:`\tfrac12\,\mathbb E[\sigma^2]\sum_p a_p^2\,\mathbf 1\{t < T_p\}` at each t.

    Args:
        coefficients: :math:`a`, shape (P,).
        escape_times: :math:`T_p`, shape (P,) (``inf`` for a direction never learned).
        times: shape (n,).
        second_moment: :math:`\mathbb E[\sigma^2]` (1 for a normalized Hermite activation).
    Returns:
        shape (n,), float64.
    """
    a = np.asarray(coefficients, dtype=np.float64)
    T = np.asarray(escape_times, dtype=np.float64)
    if a.shape != T.shape:
        raise ValueError(f"escape_times must have the shape of coefficients {a.shape}, got {T.shape}")
    t = np.asarray(times, dtype=np.float64)
    return 0.5 * second_moment * ((t[:, None] < T[None, :]) * a**2).sum(axis=1)


def idealized_escape_times(coefficients, scale: float = 1.0) -> np.ndarray:
    r""":math:`T_p = C / a_p`: escape times when every direction starts from the same overlap.

    With a common initial overlap :math:`s_0` and :math:`\sigma = h_4`, the decoupled ODE gives
    :math:`T_p = 1/(8 a_p s_0)`, i.e. :math:`C = 1/(8 s_0)`. Random initial overlaps scatter the
    :math:`T_p` around this; the chapter on greedy selection takes them into account.
    """
    scale = require_real("scale", scale, low=0.0, low_open=True)
    return scale / np.asarray(coefficients, dtype=np.float64)


def tail_beyond(P: int, beta: float, second_moment: float = 1.0) -> float:
    r"""Loss of the directions an infinite power-law teacher has beyond index P.

    Extending :math:`a_p = p^{-\beta}/Z_P` to all :math:`p \ge 1` (same normalization as the P-term
    teacher), the directions :math:`p > P` carry
    :math:`\tfrac12\mathbb E[\sigma^2] Z_P^{-2}\sum_{p>P} p^{-2\beta}
    = \tfrac12\mathbb E[\sigma^2]\,\zeta(2\beta, P+1)/Z_P^2`
    (Hurwitz zeta). A finite-P run never learns them before it has learned direction P, so
    adding this constant to its loss gives the loss of the infinite teacher up to that time: a
    pure power law, without the bend that the finite P puts into :math:`\mathcal L(t)`. Needs
    :math:`\beta > 1/2`.
    """
    from scipy.special import zeta

    P = require_int("P", P, 1)
    beta = require_real("beta", beta, low=0.5, low_open=True, why=" (the tail diverges for beta <= 1/2)")
    Z2 = float(np.sum(np.arange(1, P + 1, dtype=np.float64) ** (-2.0 * beta)))
    return 0.5 * second_moment * float(zeta(2.0 * beta, P + 1)) / Z2


# ----------------------------------------------------------------------------------------------
# Exponents predicted by the superposition argument
# ----------------------------------------------------------------------------------------------


def _beta(beta) -> float:
    return require_real("beta", beta, low=0.5, low_open=True, why=" (no scaling law for beta <= 1/2)")


def time_exponent(beta: float) -> float:
    r""":math:`\mathcal L(t) \propto t^{(1-2\beta)/\beta}` (gradient-flow time, or steps at fixed :math:`\eta`)."""
    beta = _beta(beta)
    return (1.0 - 2.0 * beta) / beta


def width_exponent(beta: float) -> float:
    r""":math:`\mathcal L(m) \propto m^{1-2\beta}` at long times (a width-m student holds m directions)."""
    return 1.0 - 2.0 * _beta(beta)


def compute_exponent(beta: float) -> float:
    r"""Compute-optimal frontier :math:`\mathcal L^* \propto (mt)^{(1-2\beta)/(1+\beta)}`
    (:math:`-1/3` at :math:`\beta = 0.8`)."""
    beta = _beta(beta)
    return (1.0 - 2.0 * beta) / (1.0 + beta)


def unstable_sample_exponent(beta: float) -> float:
    r""":math:`\mathcal L(n) \propto n^{(1-2\beta)/(2\beta)}` with :math:`\eta \propto a_{P_*}`
    (Gaussian-sequence minimax rate)."""
    beta = _beta(beta)
    return (1.0 - 2.0 * beta) / (2.0 * beta)


# ----------------------------------------------------------------------------------------------
# Fitting power laws, with uncertainty
# ----------------------------------------------------------------------------------------------


class PowerLawFit(NamedTuple):
    r"""A least-squares fit :math:`\log y = \text{intercept} + \text{slope}\cdot\log x`.

    Attributes:
        slope: the fitted exponent.
        intercept: the fitted log-prefactor.
        stderr: the ordinary-least-squares standard error of the slope.
        low, high: a 90% bootstrap interval of the slope (resampling the fitted points).
        n: number of points fitted.
        window: ``(x_min, x_max)`` of the fitted points.
    """

    slope: float
    intercept: float
    stderr: float
    low: float
    high: float
    n: int
    window: tuple[float, float]


def fit_power_law(
    x, y, window: tuple[float, float] | None = None, min_points: int = 8, n_boot: int = 1000, seed: int = 0
) -> PowerLawFit:
    r"""Fit :math:`y \propto x^{\text{slope}}` on log-log axes over ``window``, with its uncertainty.

    Points outside ``window`` (inclusive) or with non-positive / non-finite x or y are dropped.
    The uncertainty is reported twice: the OLS standard error, and a 90% bootstrap interval over
    the fitted points (deterministic through ``seed``). Both understate the error when the points
    are strongly correlated (a smooth loss curve sampled densely); the chapters add seeds.

    Raises:
        ValueError: fewer than ``min_points`` usable points in the window (a fit through two or
            three points has no meaningful uncertainty).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    min_points = require_int("min_points", min_points, 3)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if window is not None:
        lo, hi = window
        if not lo < hi:
            raise ValueError(f"window must be (low, high) with low < high, got {window}")
        keep &= (x >= lo) & (x <= hi)
    n = int(keep.sum())
    if n < min_points:
        raise ValueError(
            f"fit_power_law: only {n} usable points in the window, need at least min_points = {min_points}"
        )
    lx, ly = np.log(x[keep]), np.log(y[keep])
    A = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    residual = ly - A @ coef
    sxx = np.sum((lx - lx.mean()) ** 2)
    stderr = float(np.sqrt(np.sum(residual**2) / max(n - 2, 1) / sxx)) if sxx > 0 else float("inf")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    bx, by = lx[idx], ly[idx]
    bxm = bx - bx.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = np.sum(bxm * (by - by.mean(axis=1, keepdims=True)), axis=1) / np.sum(bxm**2, axis=1)
    slopes = slopes[np.isfinite(slopes)]
    low, high = np.quantile(slopes, [0.05, 0.95]) if slopes.size else (np.nan, np.nan)
    return PowerLawFit(
        float(coef[1]),
        float(coef[0]),
        stderr,
        float(low),
        float(high),
        n,
        (float(np.exp(lx.min())), float(np.exp(lx.max()))),
    )


def lower_envelope(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid) -> np.ndarray:
    r"""The pointwise minimum over curves of :math:`y(x)`, on a common ``grid`` (the compute frontier).

    Each curve ``(x, y)`` (x increasing) is interpolated linearly in :math:`(\log x, \log y)`; outside
    its own range it does not count. Grid points no curve covers get ``nan``.

    Args:
        curves: sequence of ``(x, y)`` pairs, e.g. ``(m * t, loss)`` for each width m.
        grid: shape (n,), positive.
    Returns:
        shape (n,).
    """
    grid = np.asarray(grid, dtype=np.float64)
    out = np.full(grid.shape, np.inf)
    for x, y in curves:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        ok = (x > 0) & (y > 0) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if x.size < 2:
            continue
        inside = (grid >= x[0]) & (grid <= x[-1])
        values = np.exp(np.interp(np.log(grid[inside]), np.log(x), np.log(y)))
        out[inside] = np.minimum(out[inside], values)
    return np.where(np.isfinite(out), out, np.nan)
