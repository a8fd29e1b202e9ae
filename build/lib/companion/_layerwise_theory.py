r"""Layer-wise training, the theory: who lands where (winner probabilities of a neuron from its
random start), how wide a student must be to cover the top directions, and growth fits of that
width against the condition number. Re-exported by :mod:`companion.layerwise`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from companion._validate import require_int, require_real
from companion.hermite import Activation
from companion.scaling import PowerLawFit, fit_power_law
from companion.selection import strength_matrix

# ----------------------------------------------------------------------------------------------
# Who lands where, and how wide the student must be
# ----------------------------------------------------------------------------------------------


def predicted_winners(initial_overlaps, coefficients, activation: Activation) -> np.ndarray:
    r"""Leading-order phase-one prediction: neuron k ends on :math:`\arg\max_q a_q|c_{kq}(0)|^{k_*-2}`, shape (m,)."""
    return np.argmax(strength_matrix(initial_overlaps, coefficients, activation.information_exponent), axis=1)


def landed_directions(overlaps, threshold: float = 0.5) -> np.ndarray:
    r"""The direction each neuron sits on (:math:`c_{kq}^2 \ge` threshold), -1 if none, shape (m,).

    With threshold > 1/2 at most one direction qualifies, since :math:`\sum_q c_{kq}^2 \le 1`.
    """
    threshold = require_real(
        "threshold",
        threshold,
        low=0.5,
        high=1.0,
        high_open=True,
        why=" (a threshold >= 1/2 makes the direction unique)",
    )
    C2 = np.asarray(overlaps, dtype=np.float64) ** 2
    if C2.ndim != 2:
        raise ValueError(f"overlaps must have shape (m, P), got {C2.shape}")
    best = np.argmax(C2, axis=1)
    return np.where(C2[np.arange(C2.shape[0]), best] >= threshold, best, -1)


def first_cover(overlaps, threshold: float = 0.5) -> np.ndarray:
    r"""For each direction q, the smallest prefix width :math:`m'` whose neurons :math:`0..m'-1` include one
    with :math:`c_{kq}^2 \ge` threshold; ``inf`` if none does. Shape (P,), float64.

    In phase one the neurons do not interact, so the first :math:`m'` neurons of a run of width m end
    exactly where a run of width :math:`m'` from the same initial neurons would: the smallest width
    that recovers the top :math:`P_*` directions is ``first_cover(...)[:P_*].max()``.
    """
    C2 = np.asarray(overlaps, dtype=np.float64) ** 2
    if C2.ndim != 2:
        raise ValueError(f"overlaps must have shape (m, P), got {C2.shape}")
    threshold = require_real("threshold", threshold, low=0.0, high=1.0, low_open=True)
    hit = C2 >= threshold
    return np.where(hit.any(axis=0), np.argmax(hit, axis=0) + 1.0, np.inf)


def winner_probabilities(coefficients, activation: Activation, nodes: int = 400) -> np.ndarray:
    r"""Probability that a uniformly random neuron lands on each direction under the leading-order rule.

    :math:`p_q = \Pr[\arg\max_{q'} a_{q'}|c_{q'}|^{k_*-2} = q]` for :math:`\bar v\sim\mathrm{Unif}(\mathbb S^{d-1})`.
    The argmax depends on the overlaps only through their ratios, and :math:`c = g/\|g\|` for a
    standard Gaussian g, so the :math:`c_q` may be replaced by i.i.d. :math:`N(0,1)` variables and
    :math:`p` does not depend on d. Conditioning on :math:`|g_q| = t`,

    .. math::
        p_q = 2\int_0^\infty \varphi(t)\prod_{q'\ne q}
        \operatorname{erf}\!\Big(\frac{t\,(a_q/a_{q'})^{1/(k_*-2)}}{\sqrt2}\Big)\,dt ,

    a one-dimensional integral, computed by Gauss-Legendre quadrature with ``nodes`` nodes on
    :math:`[0, 16]` (the Gaussian mass beyond is below :math:`10^{-56}`), in log space so that tiny
    probabilities keep their relative accuracy. Needs an even information exponent
    :math:`k_* \ge 4` (the paper's setting). Returns shape (P,); the entries sum to 1.
    """
    from numpy.polynomial.legendre import leggauss
    from scipy.special import log_ndtr

    a = np.asarray(coefficients, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or np.any(a <= 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"coefficients must be a 1-D array of positive weights, got {a!r}")
    k = activation.information_exponent
    if k % 2 or k < 4:
        raise ValueError(f"activation: needs an even information exponent k* >= 4, got k* = {k}")
    nodes = require_int("nodes", nodes, 16)
    x, w = leggauss(nodes)
    t, w = 8.0 * (x + 1.0), 8.0 * w  # [0, 16]
    log_phi = -0.5 * t**2 - 0.5 * math.log(2.0 * math.pi)
    out = np.empty(a.size)
    rows = max(1, 2**22 // (a.size * nodes))  # directions q per block: bounded memory
    for start in range(0, a.size, rows):
        q = np.arange(start, min(start + rows, a.size))
        ratio = (a[q, None] / a[None, :]) ** (1.0 / (k - 2))  # (q, q')
        arg = t[None, None, :] * ratio[:, :, None]  # erf(u / sqrt 2) = 1 - 2 Phi(-u)
        log_erf = np.log1p(-2.0 * np.exp(log_ndtr(-arg)))
        log_erf[np.arange(q.size), q] = 0.0  # q' = q is not a competitor
        out[q] = 2.0 * np.exp(log_phi[None, :] + log_erf.sum(axis=1)) @ w
    return out


def _coverage_function(probabilities, p_star: int | None):
    """m -> Pr[m_min <= m] (see coverage_probability), with the subset sums computed once."""
    p = np.asarray(probabilities, dtype=np.float64)
    p_star = p.size if p_star is None else require_int("p_star", p_star, 1, p.size)
    top = np.minimum(p[:p_star], 1.0)
    if p_star <= 16:
        subsets = (np.arange(2**p_star)[:, None] >> np.arange(p_star)) & 1  # (2^P*, P*)
        with np.errstate(divide="ignore"):
            log_kept = np.log(np.clip(1.0 - subsets @ top, 0.0, 1.0))  # -inf: a sure miss (m >= 1)
        sign = (-1.0) ** subsets.sum(axis=1)

        def coverage(m):
            m = np.asarray(m, dtype=np.float64)
            return np.clip(np.exp(np.multiply.outer(m, log_kept)) @ sign, 0.0, 1.0)
    else:
        with np.errstate(divide="ignore"):
            log_miss = np.log1p(-top)

        def coverage(m):
            m = np.asarray(m, dtype=np.float64)
            return np.prod(1.0 - np.exp(np.multiply.outer(m, log_miss)), axis=-1)

    return coverage


def coverage_probability(probabilities, widths, p_star: int | None = None) -> np.ndarray:
    r"""Probability that m independent neurons cover each of the top :math:`P_*` directions.

    Each neuron lands on q with probability :math:`p_q` (:func:`winner_probabilities`),
    independently. By inclusion-exclusion over the sets T of missed directions,

    .. math::
        \Pr[m_{\min} \le m] = \sum_{T\subseteq[P_*]} (-1)^{|T|}\Big(1 - \sum_{q\in T}p_q\Big)^m ,

    exact, used for :math:`P_* \le 16` (:math:`2^{P_*}` terms); beyond, the approximation
    :math:`\prod_{q\le P_*}(1 - (1-p_q)^m)`, which treats the misses as independent and slightly
    overestimates the coverage (a neuron on q is not on q'), negligibly when every :math:`p_q` is
    small. Returns shape ``widths.shape``.
    """
    return _coverage_function(probabilities, p_star)(widths)


def _bisect(predicate, high: int = 2**40) -> float:
    """Smallest integer m in [1, high] with predicate(m) (predicate monotone); inf if none."""
    if not predicate(high):
        return math.inf
    lo, hi = 0, high
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if predicate(mid) else (mid, hi)
    return float(hi)


def width_quantile(probabilities, p_star: int | None = None, level: float = 0.5, max_width: int = 2**40) -> float:
    r"""Smallest m with :func:`coverage_probability` :math:`\ge` level (bisection); ``inf`` beyond ``max_width``."""
    level = require_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    coverage = _coverage_function(probabilities, p_star)
    return _bisect(lambda m: coverage(m) >= level, require_int("max_width", max_width, 1))


def median_band(probabilities, p_star: int | None, seeds: int, levels=(0.05, 0.95)) -> tuple[float, float]:
    r"""Band for the *sample median* (``np.median``) of ``seeds`` independent minimal widths.

    With :math:`F(m) = \Pr[m_{\min}\le m]` (:func:`coverage_probability`), the j-th smallest of S
    draws is :math:`\le m` with probability :math:`\Pr[\mathrm{Bin}(S, F(m)) \ge j]`. For odd S the
    median is the order statistic :math:`j = (S+1)/2`; for even S it is the mean of
    :math:`j = S/2` and :math:`S/2 + 1`, so it lies between them, and the band runs from the
    ``levels[0]`` quantile of the lower one to the ``levels[1]`` quantile of the upper one. The
    sample median falls outside the band with probability at most ``levels[0] + 1 - levels[1]``:
    an honest tolerance for comparing an observed median over S seeds with the prediction, since
    it accounts for exactly the seed noise of the experiment.
    """
    from scipy.stats import binom

    seeds = require_int("seeds", seeds, 1)
    low_j, high_j = (seeds // 2, seeds // 2 + 1) if seeds % 2 == 0 else ((seeds + 1) // 2,) * 2
    coverage = _coverage_function(probabilities, p_star)
    low = _bisect(lambda m: binom.sf(low_j - 1, seeds, coverage(m)) >= levels[0])
    high = _bisect(lambda m: binom.sf(high_j - 1, seeds, coverage(m)) >= levels[1])
    return low, high


class GrowthFits(NamedTuple):
    r"""Two fits of a width against the condition number.

    Attributes:
        power: :math:`\log m = \text{intercept} + \text{slope}\cdot\log\kappa` (:func:`companion.scaling.fit_power_law`).
        exponential_rate: r of :math:`\log m = c + r\,\kappa` (least squares).
        exponential_intercept: c.
        power_rms, exponential_rms: root-mean-square residual of :math:`\log m` for each fit.
    """

    power: PowerLawFit
    exponential_rate: float
    exponential_intercept: float
    power_rms: float
    exponential_rms: float


def growth_fits(kappa, widths, min_points: int = 3) -> GrowthFits:
    r"""Fit :math:`m(\kappa)` both as a power law and as an exponential, on the finite points."""
    k = np.asarray(kappa, dtype=np.float64)
    m = np.asarray(widths, dtype=np.float64)
    ok = np.isfinite(m) & (m > 0) & np.isfinite(k) & (k > 0)
    power = fit_power_law(k[ok], m[ok], min_points=min_points)
    rate, intercept = np.polyfit(k[ok], np.log(m[ok]), 1)
    power_rms = float(np.sqrt(np.mean((np.log(m[ok]) - power.intercept - power.slope * np.log(k[ok])) ** 2)))
    exp_rms = float(np.sqrt(np.mean((np.log(m[ok]) - intercept - rate * k[ok]) ** 2)))
    return GrowthFits(power, float(rate), float(intercept), power_rms, exp_rms)
