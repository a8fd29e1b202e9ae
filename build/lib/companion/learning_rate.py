r"""Learning rates for online SGD: the theory's rate and the measured stability edge.

* :func:`theory_lr` — :math:`\eta = c\,B\,a_{\min}\Delta^2 d^{-k_*/2}`, the rate at which SGD tracks
  gradient flow's escape times to a relative :math:`\Delta` (constant measured, :data:`THEORY_LR_NOTE`);
* :func:`stability_edge`, :func:`stable_lr` — the measured largest stable rate
  :math:`\approx 0.0088\,B/d` and a production rate below it (``STABILITY_NOTE``);
* :func:`divergence_time`, :func:`find_stability_edge` — probes that measure the edge by running
  the engine (:func:`companion.sgd.simulate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from companion._validate import require_int, require_real
from companion.config import ModelConfig
from companion.errors import SGDDivergenceError

#: c in η = c · a_min Δ² d^{-I}, measured at d = 64 (see :func:`theory_lr` and ``THEORY_LR_NOTE``).
THEORY_LR_CONSTANT = 20.0
THEORY_LR_NOTE = (
    "benchmarks/theory_lr.py (theory_lr.json): h4, beta = 0.8, m = d/2, P = d/4, B = 1, one start, "
    "8 data streams, gradient flow by Euler dt = 0.0025. Relative deviation delta_p = T_p(SGD)/T_p(GF) - 1 "
    "of the escape time (max_k overlap^2 >= 1/2). RMS over streams, median over directions: d = 64: "
    "0.104, 0.258, 0.391 at eta = 4.3e-6, 1.7e-5, 6.9e-5 (fit: ~ eta^0.48); d = 128: 0.128, 0.181 at "
    "eta = 4.3e-6, 8.6e-6 (~ eta^0.49). So RMS(delta) ~ sqrt(eta) as the theory says, and "
    "c_hat = eta d^2 / (a_min RMS^2) has median 21 (quartiles 6-41) at d = 64 but 99 (56-168) at "
    "d = 128: at fixed eta the deviation barely grows with d (1.24x from 64 to 128, where d^2/a_min "
    "predicts 2.7x), so the d^-I factor is conservative and c taken at d = 64 errs on the safe side. "
    "1-4 of 16-26 directions per run were taken late by another student (counted as unbounded deviation)."
)


#: Measured stability edge: η_edge ≈ EDGE_C · B / d (see :func:`stability_edge`).
EDGE_C = 0.0088
STABILITY_NOTE = (
    "benchmarks/stability.py (stability.json), one seed per size, m = d/2, P = d/4, beta = 0.8, h4, "
    "||v0||^2 = 1/m, probe horizon t = 50, brackets of ratio sqrt(2): at all 12 sizes d = 64, 128, "
    "256, 512 x B = 1, 16, 256 the bracket [stable, unstable] * d / B was [0.0062, 0.0088] or "
    "[0.0088, 0.0125]. Two stable rates next to the edge (d = 512, B = 256, lr = 0.0044; d = 256, "
    "B = 1, lr = 2.4e-5) stayed stable to t = 150. Divergence came at t = 6-26, after the first "
    "directions were learned."
)


def theory_lr(
    model: ModelConfig, delta: float = 0.1, p_star: int | None = None, c: float | None = None, batch: int = 1
) -> float:
    r"""The theory's learning rate :math:`\eta = c\, B\, a_{\min}\Delta^2 d^{-I}`, :math:`I = k_*/2`.

    The paper chooses η so that SGD escape times stay within a factor :math:`1\pm\Delta` of gradient
    flow's (brief §4.6). The constant is ours, measured (:data:`THEORY_LR_NOTE`): with
    c = :data:`THEORY_LR_CONSTANT` = 20 at d = 64, the RMS relative deviation of the median
    direction's escape time equals Δ (a quarter of the directions need c ≈ 6 to stay within Δ). The
    measured deviation grows like :math:`\sqrt\eta` as derived, but much more slowly with d than
    :math:`d^{I}/a_{\min}`: at d = 128 the same statistic gives c ≈ 100, so for d > 64 this η is
    increasingly conservative. It is also far below the stability edge
    (:func:`stability_edge`); the paper-size value at Δ = 0.1 is about :math:`10^{-10}`.

    Args:
        model: gives d, the teacher's :math:`a_p` and the activation's :math:`k_*`.
        delta: Δ, the tolerated relative deviation of SGD escape times from gradient flow's.
        p_star: track only the top ``p_star`` directions (:math:`a_{\min} = a_{P_*}`, the
            "unstable discretization" of the paper); default all P.
        c: the constant (default :data:`THEORY_LR_CONSTANT`).
        batch: samples per step B. The noise a step adds is an average of B per-sample gradients,
            so the noise per unit of gradient-flow time is :math:`\propto\eta/B` and the same
            tracking needs :math:`\eta/B` fixed (derived; the stability edge is measured to grow
            like B too, :func:`stability_edge`). Samples to reach a flow time t: :math:`Bt/\eta`,
            independent of B.
    """
    delta = require_real("delta", delta, low=0.0, low_open=True)
    teacher = model.teacher()
    a = np.sort(np.asarray(teacher.coefficients, dtype=np.float64))[::-1]
    p_star = a.size if p_star is None else require_int("p_star", p_star, 1, a.size)
    k = teacher.activation.information_exponent
    c = THEORY_LR_CONSTANT if c is None else require_real("c", c, low=0.0, low_open=True)
    batch = require_int("batch", batch, 1)
    return float(c * batch * a[p_star - 1] * delta**2 * model.d ** (-k / 2.0))


def stability_edge(d: int, batch: int = 1) -> float:
    r"""Measured largest stable learning rate of online SGD: :math:`\eta_{\rm edge} \approx 0.0088\,B/d`.

    Measured (``benchmarks/stability.py``) for d = 64…512 and B = 1, 16, 256 (m = d/2, P = d/4,
    β = 0.8, σ = h_4): every one of the 12 brackets, of ratio √2, contains 0.0088·B/d at one of its
    ends, so the law holds to about ±20 % over that range. It falls like 1/d (halving per doubling of
    d), the scaling of least-mean-squares stability :math:`\eta\,\mathbb E\|x\|^2 \lesssim B`, and
    grows linearly with B up to at least B = 4d. For very large B it is capped by full-batch
    gradient descent's limit :math:`1/(2\kappa(1)a_{\max})` (``companion.dynamics.stability_step``).
    Runs above the edge diverge after the first directions are learned, not in the search phase.
    """
    d = require_int("d", d, 1)
    batch = require_int("batch", batch, 1)
    return float(EDGE_C * batch / d)


def stable_lr(d: int, batch: int = 1, safety: float = 0.5) -> float:
    """A production learning rate: ``safety`` times :func:`stability_edge` (default half)."""
    safety = require_real("safety", safety, low=0.0, high=1.0, low_open=True)
    return safety * stability_edge(d, batch)


def divergence_time(model: ModelConfig, lr: float, batch: int = 1, horizon: float = 50.0, seeds: int = 1) -> float:
    r"""Gradient-flow time at which SGD at ``lr`` diverges, or ``inf`` if it stays bounded up to
    ``horizon`` (no caching; runs ``model.seed``, ``model.seed + 1``, ...).

    Near the edge, divergence comes after the first directions are learned (their norms near
    :math:`a_p`), not during the search phase, so a short run is a usable stability probe.
    """
    lr = require_real("lr", lr, low=0.0, low_open=True)
    horizon = require_real("horizon", horizon, low=0.0, low_open=True)
    from companion.sgd import SGDConfig, build, simulate

    steps = max(1, int(math.ceil(horizon / lr)))
    config = SGDConfig(model, lr=lr, steps=steps, batch=batch, record=(steps,), seeds=seeds)
    teachers, V0, keys = build(config)
    try:
        simulate(teachers, V0, keys, lr, (steps,), batch=batch, block=config.block_steps, chunk_seconds=5.0)
    except SGDDivergenceError as err:
        assert err.step is not None
        return lr * err.step
    return math.inf


def find_stability_edge(
    model: ModelConfig,
    batch: int = 1,
    horizon: float = 50.0,
    factor: float = math.sqrt(2.0),
    guess: float | None = None,
    seeds: int = 1,
    log: Callable[[str], None] | None = None,
) -> tuple[float, float, list[tuple[float, float]]]:
    r"""Bracket the largest stable learning rate by probing with :func:`divergence_time`.

    Starting from ``guess`` (default :func:`stability_edge`), doubles or halves until a stable and
    an unstable rate are found, then bisects geometrically down to a bracket ratio of ``factor``.

    Returns:
        ``(stable, unstable, probes)``: the largest rate seen stable, the smallest seen to diverge
        (stable < unstable <= factor * stable), and every ``(lr, divergence time)`` probed.
    """
    factor = require_real("factor", factor, low=1.0, low_open=True)
    lr = stability_edge(model.d, batch) if guess is None else require_real("guess", guess, low=0.0, low_open=True)
    probes: list[tuple[float, float]] = []

    def probe(rate):
        t = divergence_time(model, rate, batch, horizon, seeds)
        probes.append((rate, t))
        if log is not None:
            log(
                f"d={model.d} m={model.m} P={model.P} B={batch} lr={rate:.4g}: "
                + ("stable" if math.isinf(t) else f"diverged at t={t:.3g}")
            )
        return math.isinf(t)

    if probe(lr):
        stable = lr
        while probe(lr := lr * 2.0):
            stable = lr
        unstable = lr
    else:
        unstable = lr
        while not probe(lr := lr / 2.0):
            unstable = lr
        stable = lr
    while unstable / stable > factor * (1 + 1e-9):
        mid = math.sqrt(stable * unstable)
        if probe(mid):
            stable = mid
        else:
            unstable = mid
    return stable, unstable, probes
