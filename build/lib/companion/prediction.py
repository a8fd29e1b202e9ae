r"""Predicted loss curves from the initialization alone: no training, any width, any scale.

For a width-m student drawn by a :class:`~companion.config.ModelConfig`, the prediction chains the
pieces of the emergence and selection chapters:

1. **Who learns what, in which order.** Greedy maximum selection
   (:func:`companion.selection.greedy_selection`) on :math:`M_{kq} = a_q\bar v_{k,q}(0)^{k_*-2}`
   pairs :math:`\min(m, P)` neurons with directions; a direction no neuron is paired with is never
   learned.
2. **When the winner escapes.** The refined predictor
   (:func:`companion.dynamics.refined_escape_times`): each winner's own P-dimensional direction flow
   under the teacher minus the directions already learned, up to :math:`\bar v_{k,q}^2 = 1/2`. This
   is :math:`T^{\rm esc}_q`.
3. **When the direction leaves the loss (the settle).** After the escape the winner is a lone
   neuron on :math:`v_q^*`; for :math:`\sigma = h_4` (:math:`\kappa(c) = c^4`, :math:`\kappa(1) = 1`)
   its overlap :math:`s = c^2` and norm :math:`w` solve, in the rescaled time
   :math:`\tau = a_q t` and :math:`u = w/a_q`,

   .. math::
       \frac{ds}{d\tau} = 8s^2(1-s), \qquad \frac{du}{d\tau} = 4u\,(s^2 - u),

   which depends on nothing but :math:`u` at the escape. Through the search phase the norm
   equation :math:`\dot w = 4w(a_q s^2 - w)` has two parts: the self-term shrinks the norm as
   :math:`w_0/(1 + 4w_0t)` over the whole search (a large effect: :math:`4w_0T^{\rm esc}` is of
   order 10 in the book's sweep), and the drive, concentrated near the escape, multiplies it by
   :math:`\exp(4\int s^2d\tau) = \sqrt{2(1-s_0)}`. So
   :math:`u_{\rm esc} = \sqrt{2(1-s_0)}\,w_0/\big(a_q(1 + 4w_0T^{\rm esc}_q)\big)`,
   :math:`w_0 = \|v_k(0)\|^2`. The direction leaves the loss when the
   student's weight on it, :math:`w\,s^2`, reaches :math:`a_q/2` (the definition the measured sweep
   uses, :func:`companion.experiments.run_flow`): at :math:`T_q = T^{\rm esc}_q + \tau_{1/2}(u_{\rm esc})/a_q`.

The loss is then either the **step** superposition :math:`\tfrac12\sum_q a_q^2\,\mathbf 1\{t < T_q\}`
(:func:`companion.scaling.superposition_loss`) or, with the **smooth** transition shape, the exact
lone-neuron loss of each direction, :math:`\tfrac12 a_q^2\,(1 - 2u s^2 + u^2)`, which is
:math:`\tfrac12 a_q^2` before the escape and 0 once learned (the neurons that hold nothing are left
out; their loss is :math:`\tfrac12\|v_k(0)\|^4` each).

What it leaves out: interactions between small-norm, unaligned neurons; a second neuron captured by
an already learned direction (the capture gap of the selection chapter; its effect on the frontier
is measured by :func:`attribute_frontier_gap` and :func:`companion.experiments.idle_neurons`); the pull of a learned
direction on its own winner's rivals. Cost: :math:`O(\min(m,P)\,mP)` for the selection (NumPy) plus
:math:`\min(m,P)` RK4 solves of size P for the refined times; no gradient step at all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from companion._validate import require_int
from companion.config import ModelConfig
from companion.experiments import SweepResult

#: Rescaled time step and span of the settle integration (:math:`\tau = a_q t`).
_TAU_STEP = 0.005
_TAU_SPAN = 60.0


class Prediction(NamedTuple):
    r"""A predicted run, per teacher direction (shape (P,), ``inf`` where never learned).

    Attributes:
        coefficients: :math:`a`, (P,).
        escapes: predicted escape time :math:`T^{\rm esc}_q` (overlap² of the winner reaches 1/2).
        learned: predicted time the direction leaves the loss, :math:`T_q`.
        winners: the neuron greedy selection pairs with q (-1 if none).
        escape_norms: :math:`u_{\rm esc} = w/a_q` at the escape (nan if none).
        leading: the leading-order blow-up time of the pair (``Selection.times``), for comparison.
        fallback: True where the refined flow did not escape within its cap and the escape is the
            leading-order time times the median refined/leading ratio of the other pairs.
        m: the width.
    """

    coefficients: np.ndarray
    escapes: np.ndarray
    learned: np.ndarray
    winners: np.ndarray
    escape_norms: np.ndarray
    leading: np.ndarray
    fallback: np.ndarray
    m: int


@functools.lru_cache(maxsize=1)
def _overlap_path(tau_span: float = _TAU_SPAN, h: float = _TAU_STEP):
    r"""The universal overlap path :math:`s(\tau)` from 1/2 (:math:`ds/d\tau = 8s^2(1-s)`, RK4), with
    :math:`G = \int_0^\tau s^2` and :math:`I = \int_0^\tau e^{4G}`. Returns (tau, s, G, I), each (n,)."""
    n = int(round(tau_span / h)) + 1
    s = np.empty(n)
    s[0] = 0.5

    def f(x):
        return 8.0 * x * x * (1.0 - x)

    x = 0.5
    for i in range(1, n):
        k1 = f(x)
        k2 = f(x + h / 2 * k1)
        k3 = f(x + h / 2 * k2)
        k4 = f(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        s[i] = x
    tau = np.arange(n) * h
    G = np.concatenate([[0.0], np.cumsum(0.5 * h * (s[1:] ** 2 + s[:-1] ** 2))])
    E = np.exp(4.0 * G)
    I = np.concatenate([[0.0], np.cumsum(0.5 * h * (E[1:] + E[:-1]))])
    return tau, s, G, I


def _settle_path(u_esc: np.ndarray):
    r""":math:`(s, u)` from :math:`(1/2, u_{\rm esc})`: ``(tau (n,), s (n,), u (n, K))``.

    The norm equation is Bernoulli: :math:`1/u` solves the linear
    :math:`(1/u)' = -4s^2/u + 4`, so :math:`u(\tau) = e^{4G(\tau)}/(1/u_{\rm esc} + 4I(\tau))`.
    """
    tau, s, G, I = _overlap_path()
    u0 = np.asarray(u_esc, dtype=np.float64).reshape(-1)
    return tau, s, np.exp(4.0 * G)[:, None] / (1.0 / u0[None, :] + 4.0 * I[:, None])


def settle_time(u_esc) -> np.ndarray:
    r"""Rescaled settle time :math:`\tau_{1/2}`: from :math:`(s, u) = (1/2, u_{\rm esc})` until
    :math:`u s^2 = 1/2`, for the lone-neuron :math:`h_4` system of the module docstring (0 when
    :math:`u_{\rm esc}/4 \ge 1/2` already).

    About :math:`\log(1/u_{\rm esc})/4` for small :math:`u_{\rm esc}` (the logistic norm growth),
    plus the overlap's own approach to 1. Args: ``u_esc`` > 0, any shape. Returns the same shape;
    multiply by :math:`1/a_q` for gradient-flow time.
    Raises: ValueError if ``u_esc`` is not finite and > 0.
    """
    u = np.asarray(u_esc, dtype=np.float64)
    if np.any(~(u > 0)) or np.any(~np.isfinite(u)):
        raise ValueError("u_esc must be finite and > 0")
    flat = u.reshape(-1)
    if flat.size == 0:
        return np.zeros(u.shape)
    tau, S, U = _settle_path(flat)
    held = U * S[:, None] ** 2  # (n, K), increasing in tau
    i = np.argmax(held >= 0.5, axis=0)
    if np.any(held[i, np.arange(flat.size)] < 0.5):
        raise ValueError(f"u_esc: the settle did not finish within tau = {_TAU_SPAN} (u_esc below {flat.min():.3g})")
    j = np.arange(flat.size)
    lo = held[np.maximum(i - 1, 0), j]
    hi = held[i, j]
    frac = np.where(hi > lo, (0.5 - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    out = np.where(i == 0, 0.0, tau[np.maximum(i - 1, 0)] + frac * (tau[1] - tau[0]))
    return out.reshape(u.shape)


def predict_from_init(V0, teacher, refined: bool = True, resolution: int = 400) -> Prediction:
    r"""The prediction of the module docstring for one initial student.

    Args:
        V0: initial student, shape (m, d).
        teacher: the teacher (:math:`\sigma = h_4`: the settle is written for it).
        refined: use :func:`~companion.dynamics.refined_escape_times` (True) or the leading-order
            blow-up times :math:`1/(8a_q s_0)` of greedy selection (False) for the escapes.
        resolution: RK4 steps per leading-order time of the refined predictor (>= 10).
    """
    from companion.dynamics import refined_escape_times
    from companion.selection import greedy_selection
    from companion.student import norms_sq, overlaps

    activation = teacher.activation
    if activation.information_exponent != 4:
        raise ValueError(
            f"teacher.activation: the settle is derived for information exponent 4 (h4), got {activation.information_exponent}"
        )
    resolution = require_int("resolution", resolution, 10)
    C0 = np.asarray(overlaps(V0, teacher), dtype=np.float64)
    W0 = np.asarray(norms_sq(V0), dtype=np.float64)
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    m, P = C0.shape
    selection = greedy_selection(C0, a, activation)
    k, q = selection.students, selection.teachers
    fallback = np.zeros(P, dtype=bool)
    if refined:
        # Only the winners' rows enter, padded to P stages by dummy neurons that sit exactly on an
        # unselected direction (they cross at once and come after every real stage, so they change
        # nothing): the jitted solve then compiles once per P, whatever the width.
        n = k.size
        rest = np.setdiff1d(np.arange(P), q)
        C_pad = np.concatenate([C0[k], np.eye(P)[rest]])
        W_pad = np.concatenate([W0[k], np.full(rest.size, 1e-12)])
        esc = refined_escape_times(
            C_pad, W_pad, a, activation, np.arange(P), np.concatenate([q, rest]), resolution=resolution
        )[:n]
        # A winner whose refined flow does not reach the escape within its cap (a close rival
        # direction pulls it away; rare, and rarer as d grows) falls back on its leading-order time
        # times the median refined/leading ratio of the others.
        bad = ~np.isfinite(esc) & np.isfinite(selection.times)
        good = np.isfinite(esc) & np.isfinite(selection.times)
        if bad.any() and good.any():
            esc = esc.copy()
            esc[bad] = selection.times[bad] * np.median(esc[good] / selection.times[good])
            fallback[q[bad]] = True
    else:
        esc = np.asarray(selection.times, dtype=np.float64)
    escapes = np.full(P, np.inf)
    learned = np.full(P, np.inf)
    winners = np.full(P, -1, dtype=np.int64)
    u_esc = np.full(P, np.nan)
    leading = np.full(P, np.inf)
    winners[q] = k
    escapes[q] = esc
    leading[q] = selection.times
    s0 = C0[k, q] ** 2
    ok = np.isfinite(esc)
    # Search phase: w' = 4w(a s^2 - w). The self-term shrinks the norm as w0/(1 + 4 w0 t) over the
    # whole search; the a s^2 term, concentrated near the escape, multiplies it by sqrt(2(1 - s0)).
    decay = np.where(ok, 1.0 + 4.0 * W0[k] * np.where(ok, esc, 0.0), 1.0)
    u_esc[q] = W0[k] / decay / a[q] * np.sqrt(2.0 * (1.0 - s0))
    learned[q[ok]] = esc[ok] + settle_time(u_esc[q[ok]]) / a[q[ok]]
    return Prediction(a, escapes, learned, winners, u_esc, leading, fallback, m)


def predict(model: ModelConfig, refined: bool = True, resolution: int = 400) -> Prediction:
    """:func:`predict_from_init` on ``model.build()`` (its width ``m`` and ``seed``)."""
    teacher, V0 = model.build()
    return predict_from_init(V0, teacher, refined=refined, resolution=resolution)


def predicted_loss(prediction: Prediction, times, shape: str = "step") -> np.ndarray:
    r"""The predicted loss at ``times`` (shape (R,)), float64.

    Args:
        prediction: from :func:`predict`.
        times: shape (R,), >= 0.
        shape: ``"step"``: :math:`\tfrac12\sum_q a_q^2\mathbf 1\{t < T_q\}`; ``"smooth"``: each learned
            direction's lone-neuron loss :math:`\tfrac12a_q^2(1 - 2us^2 + u^2)` after its escape.
    """
    from companion.scaling import superposition_loss

    t = np.asarray(times, dtype=np.float64)
    if shape == "step":
        return superposition_loss(prediction.coefficients, prediction.learned, t)
    if shape != "smooth":
        raise ValueError(f"shape must be 'step' or 'smooth', got {shape!r}")
    a = prediction.coefficients
    ok = np.isfinite(prediction.escapes)
    out = 0.5 * np.sum(a[~ok] ** 2) * np.ones_like(t)
    q = np.flatnonzero(ok)
    if q.size == 0:
        return out
    tau, S, U = _settle_path(prediction.escape_norms[q])
    share = 1.0 - 2.0 * U * S[:, None] ** 2 + U**2  # (n, K)
    rel = (t[:, None] - prediction.escapes[q][None, :]) * a[q][None, :]  # rescaled time since escape
    for j in range(q.size):
        r = rel[:, j]
        value = np.where(r < 0, 1.0, np.interp(r, tau, share[:, j], right=share[-1, j]))
        out += 0.5 * a[q[j]] ** 2 * value
    return out


@dataclass(frozen=True)
class PredictionRun:
    """One cached prediction: the cache key (the model with its width and seed, and the predictor)."""

    model: ModelConfig
    refined: bool = True
    resolution: int = 400


#: Bump when the prediction's meaning changes.
VERSION = "1"


def run_prediction(run: PredictionRun, cache=None) -> Prediction:
    """:func:`predict` through the results cache (a :class:`companion.cache.Cache` or None)."""
    if cache is not None:
        hit = cache.load(run)
        if hit is not None:
            arrays = hit[0]
            return Prediction(
                arrays["coefficients"],
                arrays["escapes"],
                arrays["learned"],
                arrays["winners"],
                arrays["escape_norms"],
                arrays["leading"],
                arrays["fallback"].astype(bool),
                run.model.m,
            )
    pred = predict(run.model, refined=run.refined, resolution=run.resolution)
    if cache is not None:
        cache.save(run, {name: np.asarray(getattr(pred, name)) for name in Prediction._fields if name != "m"})
    return pred


#: Predicted arrays over widths and seeds: the fields of a simulated sweep
#: (:class:`companion.experiments.SweepResult`: times (R,), loss (S, W, R), escapes, learned,
#: winners (S, W, P), widths (W,), seeds (S,)), so every analysis of a sweep applies to a prediction.
PredictedSweep = SweepResult


def predict_sweep(
    model: ModelConfig,
    widths,
    seeds,
    times,
    shape: str = "step",
    refined: bool = True,
    resolution: int = 400,
    cache=True,
) -> PredictedSweep:
    """:func:`predict` for every width and seed (the initializations a width sweep would train).

    ``cache``: a :class:`companion.cache.Cache`, True for the default one, or False/None.
    """
    from companion.cache import Cache

    cache = Cache.resolve(cache, namespace="prediction", version=VERSION)
    widths = tuple(require_int("widths", w, 1) for w in widths)
    seeds = tuple(require_int("seeds", s, 0) for s in seeds)
    if not widths or not seeds:
        raise ValueError("widths and seeds must be non-empty")
    t = np.asarray(times, dtype=np.float64)
    S, W, P = len(seeds), len(widths), model.P
    loss = np.zeros((S, W, t.size))
    escapes, learned = np.zeros((S, W, P)), np.zeros((S, W, P))
    winners = np.zeros((S, W, P), dtype=np.int64)
    for i, seed in enumerate(seeds):
        for j, m in enumerate(widths):
            pred = run_prediction(PredictionRun(model.replace(m=m, seed=seed), refined, resolution), cache)
            loss[i, j] = predicted_loss(pred, t, shape)
            escapes[i, j], learned[i, j], winners[i, j] = pred.escapes, pred.learned, pred.winners
    return PredictedSweep(t, loss, escapes, learned, winners, np.asarray(widths), np.asarray(seeds))


def plateau_ratio(loss_final, coefficients, widths) -> np.ndarray:
    r"""Final loss over the ideal plateau :math:`\tfrac12\sum_{p>m}a_p^2` (top m learned), per width.

    Args: ``loss_final`` (..., W); ``coefficients`` (P,); ``widths`` (W,) (each < P).
    """
    a = np.asarray(coefficients, dtype=np.float64)
    widths = np.asarray(widths)
    if np.any(widths >= a.size):
        raise ValueError(f"widths must be < P = {a.size} (the ideal plateau is 0 beyond)")
    ideal = np.array([0.5 * np.sum(a[m:] ** 2) for m in widths])
    return np.asarray(loss_final, dtype=np.float64) / ideal


def predicted_exponents(
    model: ModelConfig,
    widths,
    seeds,
    horizon: float | None = None,
    records: int = 300,
    shape: str = "step",
    refined: bool = True,
    resolution: int = 400,
    cache=True,
) -> dict:
    r"""Predicted time, width and frontier exponents of a width sweep, fitted exactly as the measured
    ones (:func:`companion.frontier.fit_exponents`).

    ``horizon`` defaults to the latest predicted learning time of the widest student (every
    direction learned). Returns ``{"time", "width", "frontier"}`` (each a list over seeds),
    ``"horizon"`` and ``"fallbacks"`` (refined escapes replaced by scaled leading-order ones).
    """
    from companion.cache import Cache
    from companion.dynamics import log_times
    from companion.frontier import fit_exponents

    widths = tuple(widths)
    store = Cache.resolve(cache, namespace="prediction", version=VERSION)
    preds = [
        [run_prediction(PredictionRun(model.replace(m=m, seed=s), refined, resolution), store) for m in widths]
        for s in seeds
    ]
    if horizon is None:
        horizon = float(max(np.max(p[-1].learned[np.isfinite(p[-1].learned)]) for p in preds))
    t = log_times(horizon, records, t_min=horizon / 5000.0)
    loss = np.array([[predicted_loss(p, t, shape) for p in row] for row in preds])
    escapes = np.array([[p.escapes for p in row] for row in preds])
    fits = fit_exponents(t, loss, escapes, np.asarray(widths), model.P, model.beta)
    return {
        "time": fits.time.tolist(),
        "width": fits.width.tolist(),
        "frontier": fits.frontier.tolist(),
        "horizon": horizon,
        "fallbacks": int(sum(p.fallback.sum() for row in preds for p in row)),
    }


#: Scales of :func:`prediction_scale_scan`: (d, P = d/2, widths P/16 ... 2P by factors of 2).
SCALE_SCAN = {
    "test": {"ds": (32, 64), "seeds": (0,)},
    "medium": {"ds": (256, 512, 1024, 2048), "seeds": (0, 1, 2)},
}


def prediction_scale_scan(preset: str = "medium", refined: bool = False, progress: bool = False) -> dict:
    r"""Predicted exponents at d = 256 ... 2048 (P = d/2, β = 0.8, h4), several seeds: how the
    width dependence of the escape times bends the frontier at each scale.

    ``refined=False`` uses greedy selection's leading-order times (the refined solve costs minutes
    per student at paper size on 2 cores); the chapter measures at the book's scale how much that
    changes the slopes.
    """
    if preset not in SCALE_SCAN:
        raise ValueError(f"preset must be one of {sorted(SCALE_SCAN)}, got {preset!r}")
    spec = SCALE_SCAN[preset]
    rows = []
    for d in spec["ds"]:
        P = d // 2
        widths = tuple(int(P // 16 * 2**i) for i in range(6)) if P >= 16 else (P // 4, P // 2, P, 2 * P)
        model = ModelConfig(d=d, P=P, m=1)
        if progress:
            print(f"d = {d}, P = {P}, widths {widths}", flush=True)
        rows.append(
            {
                "d": d,
                "P": P,
                "widths": widths,
                "seeds": spec["seeds"],
                "refined": refined,
                **predicted_exponents(model, widths, spec["seeds"], refined=refined),
            }
        )
    return {"experiment": "prediction_scale", "preset": preset, "beta": 0.8, "rows": rows}


# ----------------------------------------------------------------------------------------------
# Where a prediction misses: the learned set or the learning times
# ----------------------------------------------------------------------------------------------


def oracle_sweep(result: SweepResult, coefficients) -> SweepResult:
    r"""Step loss curves from a sweep's *measured* learning times,
    :math:`\tfrac12\sum_q a_q^2\mathbf 1\{t < T^{\rm meas}_q\}`: the prediction's loss model with
    perfect knowledge of who learns what and when. Same fields as ``result``; only ``loss`` changes.

    Args:
        result: a measured (or predicted) sweep: times (R,), learned (S, W, P).
        coefficients: :math:`a`, shape (P,).
    """
    from companion.scaling import superposition_loss

    a = np.asarray(coefficients, dtype=np.float64)
    S, W, P = result.learned.shape
    if a.shape != (P,):
        raise ValueError(f"coefficients must have shape (P,) = ({P},), got {a.shape}")
    loss = np.array([[superposition_loss(a, result.learned[s, w], result.times) for w in range(W)] for s in range(S)])
    return result._replace(loss=loss)


class GapAttribution(NamedTuple):
    r"""Where a predicted sweep's frontier parts from the measured one (:func:`attribute_frontier_gap`).

    Attributes:
        measured, oracle, predicted: frontier slopes (mean over seeds) of the measured curves, of the
            step curves from the measured learning times (:func:`oracle_sweep`), and of the prediction.
        measured_set: frontier slope of step curves with the *predicted* learning times on the
            *measured* learned set (a direction learned but not predicted keeps its measured time):
            the prediction with only its learned set corrected.
        time_ratio: median predicted/measured learning time over directions both learn by the horizon.
        time_quartiles: its first and third quartiles.
        measured_learned, predicted_learned: directions learned by the horizon, summed over seeds and widths.
        missed: directions predicted to be learned by the horizon but not learned, summed likewise.
        unpredicted: learned but not predicted.
        missed_share: the loss of the missed directions, :math:`\tfrac12\sum a_q^2`, over the
            measured final loss, at each seed and width (S, W) (0 where none is missed).
    """

    measured: float
    oracle: float
    predicted: float
    measured_set: float
    time_ratio: float
    time_quartiles: tuple[float, float]
    measured_learned: int
    predicted_learned: int
    missed: int
    unpredicted: int
    missed_share: np.ndarray


def attribute_frontier_gap(
    result: SweepResult, prediction: SweepResult, coefficients, P: int, beta: float
) -> GapAttribution:
    r"""Split a frontier miss into its two possible sources: the learning *times* and the learned *set*.

    The prediction's loss is a step superposition over directions. Its frontier can miss because it
    puts the steps at the wrong times, or because it counts the wrong directions as learned (a neuron
    that wins no direction of its own; greedy selection gives every neuron one while directions remain).
    The step curves built from the measured learning times (:func:`oracle_sweep`) have the measured
    set and the measured times: if their frontier equals the measured one, the curve *shape* between
    steps is not the cause. The step curves with the predicted times on the measured set
    (``measured_set``) then tell the two others apart: if their frontier is the measured one, the
    learned set carries the whole gap; if it is the predicted one, the times do.

    Args:
        result: the measured sweep; ``prediction``: its prediction at the same ``times`` (step shape).
        coefficients: :math:`a` (P,); ``P``, ``beta``: the teacher, for the fits
            (:func:`companion.frontier.fit_exponents`, each on its own window: the step curves built on the
            measured sweep have the measured escapes, the prediction its own).
    """
    from companion.frontier import fit_exponents

    if prediction.loss.shape != result.loss.shape or prediction.learned.shape != result.learned.shape:
        raise ValueError(
            f"prediction and result must have the same shapes, got loss {prediction.loss.shape} vs {result.loss.shape}"
        )
    a = np.asarray(coefficients, dtype=np.float64)
    horizon = result.times[-1]

    def slope(sweep):  # the window is read from the sweep's own escapes, as for every fit in the book
        fits = fit_exponents(sweep.times, sweep.loss, sweep.escapes, sweep.widths, P, beta)
        return float(np.nanmean(fits.frontier))

    meas = np.isfinite(result.learned) & (result.learned <= horizon)
    pred = np.isfinite(prediction.learned) & (prediction.learned <= horizon)
    both = meas & pred
    missed = pred & ~meas
    missed_loss = 0.5 * np.sum(np.where(missed, a**2, 0.0), axis=-1)
    ratio = prediction.learned[both] / result.learned[both]
    on_measured_set = np.where(meas, np.where(pred, prediction.learned, result.learned), np.inf)
    return GapAttribution(
        slope(result),
        slope(oracle_sweep(result, a)),
        slope(prediction),
        slope(oracle_sweep(result._replace(learned=on_measured_set), a)),
        float(np.median(ratio)) if both.any() else float("nan"),
        (float(np.quantile(ratio, 0.25)), float(np.quantile(ratio, 0.75))) if both.any() else (np.nan, np.nan),
        int(meas.sum()),
        int(pred.sum()),
        int(missed.sum()),
        int((meas & ~pred).sum()),
        np.divide(missed_loss, result.loss[..., -1], out=np.zeros_like(missed_loss), where=missed_loss > 0),
    )
