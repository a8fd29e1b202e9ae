r"""The unstable-learning-rate trick: online SGD at :math:`\eta\propto a_{P_*}` instead of :math:`a_{\min}`.

The theory's step size (:func:`companion.sgd.theory_lr`) is :math:`\eta = c\,B\,a_{\min}\Delta^2 d^{-I}`:
small enough that *every* direction's escape time stays within a factor :math:`1\pm\Delta` of
gradient flow's. Tying it to :math:`a_{P_*}` instead keeps that guarantee for the top :math:`P_*`
directions only, and reaches them in :math:`a_{P_*}/a_{\min}` times fewer samples.

One :class:`UnstableLR` experiment runs, from a single initial student, the gradient-flow reference
and, for every :math:`P_*` in ``p_stars``, ``streams`` online-SGD runs at
:math:`\eta_{P_*}` that differ only in their data. Everything is cached run by run
(:func:`companion.sgd.run_sgd`, :func:`companion.experiments.run_flow`).

Derived, not from the paper (see the chapter): the RMS relative deviation of direction p's escape
time grows like :math:`\sqrt{\eta/(B a_p)}`, so at :math:`\eta_{P_*}` it is
:math:`\Delta\sqrt{a_{P_*}/a_p}` (:func:`tracking_ratio`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np

from companion._validate import require_int, require_real
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import direction_escapes
from companion.experiments import FlowRun, run_flow
from companion.scaling import fit_power_law, tail_beyond
from companion.sgd import SGDConfig, log_steps, run_sgd, theory_lr

#: Cache version of this module's own entries (the gradient-flow reference, namespace
#: ``"unstable-flow"``); bump when their meaning changes. The SGD runs are cached by
#: :func:`companion.sgd.run_sgd` under its own namespace and version.
VERSION = "unstable-1"
FLOW_NAMESPACE = "unstable-flow"


@dataclass(frozen=True)
class UnstableLR:
    r"""Online SGD at the learning rates :math:`\eta_{P_*} = c\,B\,a_{P_*}\Delta^2 d^{-I}`, one initialization.

    Attributes:
        model: teacher and initial student (every run starts from ``model``'s student).
        p_stars: the :math:`P_*` values, strictly increasing in ``[1, P]``; ``P`` itself is the
            stable rule :math:`\eta\propto a_{\min}`.
        delta: Δ, the tracking accuracy the rule is built for (:func:`companion.sgd.theory_lr`).
        batch: samples per step B (the rate scales with B, so samples per flow time do not).
        streams: data streams per rate (all from the same initial student).
        horizon: gradient-flow time :math:`t=\eta\cdot\text{steps}` every run reaches.
        records: log-spaced record steps per run.
        flow_dt: Euler step of the gradient-flow reference.
    """

    model: ModelConfig
    p_stars: tuple[int, ...]
    delta: float = 0.1
    batch: int = 1
    streams: int = 2
    horizon: float = 50.0
    records: int = 160
    flow_dt: float = 0.01

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be a companion.config.ModelConfig, got {type(self.model).__name__}")
        if not self.p_stars:
            raise ValueError("p_stars must be a non-empty tuple of integers in [1, P]")
        for p in self.p_stars:
            require_int(
                "p_stars", p, 1, self.model.P, why=f" (the number of top directions, 1 <= P* <= P = {self.model.P})"
            )
        if tuple(sorted(set(self.p_stars))) != tuple(self.p_stars):
            raise ValueError(f"p_stars must be strictly increasing, got {self.p_stars}")
        require_real("delta", self.delta, low=0.0, low_open=True)
        require_int("batch", self.batch, 1)
        require_int("streams", self.streams, 1)
        require_real("horizon", self.horizon, low=0.0, low_open=True)
        require_int("records", self.records, 8)
        require_real("flow_dt", self.flow_dt, low=0.0, low_open=True)

    def replace(self, **changes) -> UnstableLR:
        return dataclasses.replace(self, **changes)

    def rate(self, p_star: int) -> float:
        r""":math:`\eta_{P_*} = c\,B\,a_{P_*}\Delta^2 d^{-I}` (:func:`companion.sgd.theory_lr`)."""
        return theory_lr(self.model, self.delta, p_star=p_star, batch=self.batch)

    def sgd_config(self, p_star: int) -> SGDConfig:
        """The SGD runs at :math:`\\eta_{P_*}`: ``streams`` data streams from one initialization."""
        lr = self.rate(p_star)
        steps = int(math.ceil(self.horizon / lr))
        return SGDConfig(
            self.model,
            lr=lr,
            steps=steps,
            batch=self.batch,
            record=log_steps(steps, self.records),
            seeds=self.streams,
            same_init=True,
        )

    def flow_run(self) -> FlowRun:
        return FlowRun(self.model, self.horizon, dt=self.flow_dt, records=2 * self.records)


class UnstableResult(NamedTuple):
    r"""Arrays of an :class:`UnstableLR` experiment; K rates, S streams, P directions, R records.

    Attributes:
        p_stars: (K,); rates: (K,) the learning rates :math:`\eta_{P_*}`.
        coefficients: (P,) the teacher's :math:`a_p` (decreasing).
        samples: (K, R) samples seen at each record, :math:`B\cdot\text{step}`.
        times: (K, R) gradient-flow time at each record, :math:`\eta\cdot\text{step}`.
        loss: (K, S, R) closed-form population loss. (Fast runs have fewer distinct record
            steps; their rows end in ``nan``.)
        escapes: (K, S, P) gradient-flow time at which direction p's first student reached
            overlap² 1/2 (``inf`` if none); winners: (K, S, P) that student (-1 if none).
        flow_times, flow_loss: (R',) the gradient-flow reference from the same start.
        flow_escapes, flow_winners: (P,) the same for the flow.
        batch: B.
    """

    p_stars: np.ndarray
    rates: np.ndarray
    coefficients: np.ndarray
    samples: np.ndarray
    times: np.ndarray
    loss: np.ndarray
    escapes: np.ndarray
    winners: np.ndarray
    flow_times: np.ndarray
    flow_loss: np.ndarray
    flow_escapes: np.ndarray
    flow_winners: np.ndarray
    batch: int


def run_unstable(config: UnstableLR, cache: Cache | bool | None = True, progress: bool = False) -> UnstableResult:
    """Run (or load from the cache) the flow reference and every SGD run of ``config``.

    Args:
        config: the experiment.
        cache: ``True`` (default cache folders), ``False``/``None`` (none), or a folder path.
        progress: progress bars for the SGD runs.
    """
    if not isinstance(config, UnstableLR):
        raise ValueError(f"config must be an UnstableLR, got {type(config).__name__}")
    flow = run_flow(config.flow_run(), Cache.resolve(cache, namespace=FLOW_NAMESPACE, version=VERSION))
    a = np.asarray(config.model.teacher().coefficients, dtype=np.float64)
    samples, times, loss, escapes, winners = [], [], [], [], []
    for p_star in config.p_stars:
        result = run_sgd(config.sgd_config(p_star), cache=cache, progress=progress)
        samples.append(config.batch * result.steps.astype(np.float64))
        times.append(result.times)
        loss.append(result.loss)
        pairs = [direction_escapes(result.trajectory(j)) for j in range(result.seeds)]
        winners.append(np.stack([w for w, _ in pairs]))
        escapes.append(np.stack([t for _, t in pairs]))
    # Rounding leaves the fast runs fewer distinct record steps: pad the record axis with nan.
    R = max(x.size for x in samples)

    def pad(x):
        widths = [(0, 0)] * (x.ndim - 1) + [(0, R - x.shape[-1])]
        return np.pad(x.astype(np.float64), widths, constant_values=np.nan)

    return UnstableResult(
        np.asarray(config.p_stars),
        np.asarray([config.rate(p) for p in config.p_stars]),
        a,
        np.stack([pad(x) for x in samples]),
        np.stack([pad(x) for x in times]),
        np.stack([pad(x) for x in loss]),
        np.stack(escapes),
        np.stack(winners),
        flow["times"],
        flow["loss"],
        flow["escapes"],
        flow["winners"],
        config.batch,
    )


# ----------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------


def tracking_ratio(result: UnstableResult) -> np.ndarray:
    r""":math:`x_{P_*,p} = a_{P_*}/a_p`, shape (K, P): how far :math:`\eta_{P_*}` exceeds the rate
    built for direction p (x ≤ 1: p is among the tracked top :math:`P_*`). The derived prediction
    for the RMS relative deviation of p's escape time is :math:`\Delta\sqrt{x}`."""
    a = result.coefficients
    return a[result.p_stars - 1][:, None] / a[None, :]


def escape_deviation(result: UnstableResult, same_winner_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    r"""Relative deviation of SGD escape times from the flow's, and whether the same student won.

    Args:
        result: the experiment.
        same_winner_only: count only escapes won by the flow's student (the chapter's first
            version did; it drops the escapes SGD hands to another neuron, which at large overdrive
            are most of them, and so biases the deviation down). Default: every escape.
    Returns:
        ``(deviation, same_winner)``, each (K, S, P): :math:`T^{\rm SGD}_p/T^{\rm GF}_p - 1` where
        both are finite (and, with ``same_winner_only``, the same student learned p; ``nan``
        otherwise), and whether SGD's student is the flow's.
    """
    same = (result.winners == result.flow_winners[None, None, :]) & (result.flow_winners >= 0)
    ok = np.isfinite(result.escapes) & np.isfinite(result.flow_escapes)[None, None, :]
    if same_winner_only:
        ok = ok & same
    with np.errstate(invalid="ignore", divide="ignore"):
        deviation = np.where(ok, result.escapes / result.flow_escapes[None, None, :] - 1.0, np.nan)
    return deviation, same


def samples_to_top_at(result: UnstableResult, row: int) -> np.ndarray:
    r"""Samples the run ``row`` needed to learn the top :math:`P_*` for every :math:`P_*` in
    ``p_stars``, shape (K, S): the last escape among directions :math:`1..P_*`, converted to
    samples :math:`B\,t/\eta` (``inf`` if one of them was never learned). ``row = -1`` gives the
    stable rule's cost of each target."""
    row = require_int("row", row, -result.p_stars.size, result.p_stars.size - 1)
    last = np.stack([np.max(result.escapes[row, :, :p_star], axis=1) for p_star in result.p_stars])
    return result.batch * last / result.rates[row]


def samples_to_top(result: UnstableResult) -> np.ndarray:
    r"""Samples each run needed to learn its *own* top :math:`P_*` directions, shape (K, S): the
    diagonal of :func:`samples_to_top_at` over the runs."""
    return np.stack([samples_to_top_at(result, i)[i] for i in range(result.p_stars.size)])


def loss_at(result: UnstableResult, row: int, samples) -> np.ndarray:
    r"""The stream-averaged loss of run ``row`` at the given sample counts (log-linear
    interpolation between records; ``nan`` outside the recorded range), shape like ``samples``."""
    row = require_int("row", row, -result.p_stars.size, result.p_stars.size - 1)
    n = result.samples[row]
    curve = np.mean(result.loss[row], axis=0)
    keep = np.isfinite(n) & (n > 0)
    x = np.log(np.asarray(samples, dtype=np.float64))
    y = np.interp(x, np.log(n[keep]), np.log(curve[keep]), left=np.nan, right=np.nan)
    return np.exp(y)


def rule_points(result: UnstableResult) -> tuple[np.ndarray, np.ndarray]:
    r"""The unstable rule's loss-vs-samples points: for each :math:`P_*`, the stream-median samples
    :math:`n_{P_*}` its run needed to learn its top :math:`P_*`, and that run's loss there.
    Returns ``(n, loss)``, each (K,)."""
    n = np.median(samples_to_top(result), axis=1)
    loss = np.array([loss_at(result, i, n[i]) if np.isfinite(n[i]) else np.nan for i in range(n.size)])
    return n, loss


class TrackingCurve(NamedTuple):
    r"""Escape-time tracking pooled over runs and directions, binned by :math:`x = a_{P_*}/a_p`.

    Attributes:
        x: (J,) geometric bin centres; rms: (J,) RMS of :math:`T^{\rm SGD}_p/T^{\rm GF}_p - 1` (same
        winner only); same_winner: (J,) fraction where SGD's winner is the flow's; counts: (J,)
        escapes in each bin; fit: power law of rms against x (:func:`companion.scaling.fit_power_law`;
        None with fewer than four bins).
    """

    x: np.ndarray
    rms: np.ndarray
    same_winner: np.ndarray
    counts: np.ndarray
    fit: object


def tracking_curve(
    result: UnstableResult, bins: int = 7, min_count: int = 5, same_winner_only: bool = False
) -> TrackingCurve:
    """Bin :func:`escape_deviation` by :func:`tracking_ratio` (``bins`` log-spaced bins over the
    observed range; bins with fewer than ``min_count`` escapes are dropped) and fit the RMS.
    Every escape counts unless ``same_winner_only``."""
    bins = require_int("bins", bins, 2)
    deviation, same = escape_deviation(result, same_winner_only)
    x = np.broadcast_to(tracking_ratio(result)[:, None, :], deviation.shape)
    edges = np.geomspace(x.min() * 0.999, x.max() * 1.001, bins + 1)
    centers: list[np.ndarray] | np.ndarray
    rms: list[np.ndarray] | np.ndarray
    centers, rms, agree, counts = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        inside = (x >= lo) & (x < hi)
        ok = inside & np.isfinite(deviation)
        if ok.sum() >= min_count:
            centers.append(np.sqrt(lo * hi))
            rms.append(np.sqrt(np.mean(deviation[ok] ** 2)))
            agree.append(np.mean(same[inside]))
            counts.append(int(ok.sum()))
    centers, rms = np.asarray(centers), np.asarray(rms)
    return TrackingCurve(centers, rms, np.asarray(agree), np.asarray(counts), _fit_or_none(centers, rms, min_points=4))


def _fit_or_none(x, y, **kwargs):
    """:func:`companion.scaling.fit_power_law`, or None where it refuses (too few points)."""
    try:
        return fit_power_law(x, y, **kwargs)
    except ValueError:
        return None


class RateConstant(NamedTuple):
    r"""The learning-rate constant c(d) measured from an experiment's own escapes.

    :func:`companion.sgd.theory_lr` sets :math:`\eta/B = c\,a_{P_*}\Delta^2 d^{-I}`, with c meant to be
    the value at which the RMS relative deviation of a direction's escape time is Δ when driven at
    its own rate (x = 1). With a deviation that grows like :math:`\sqrt{\eta}` (derived), a bin at
    overdrive x with RMS deviation r implies :math:`c(d) = c_{\rm used}\,x\,(\Delta/r)^2`.

    Attributes:
        used: the c the experiment's rates were built with (recovered from the rates).
        per_bin: (J,) the implied c(d) of each tracking bin; x: (J,) the bins' overdrive.
        value: the median over bins; at_one: the bin nearest x = 1.
    """

    used: float
    per_bin: np.ndarray
    x: np.ndarray
    value: float
    at_one: float


def rate_constant(
    result: UnstableResult, delta: float, d: int, information_exponent: int, tracking: TrackingCurve | None = None
) -> RateConstant:
    """c(d) implied by the measured tracking (see :class:`RateConstant`); every escape counts."""
    delta = require_real("delta", delta, low=0.0, low_open=True)
    tracking = tracking_curve(result) if tracking is None else tracking
    a = result.coefficients
    used = float(
        np.median(
            result.rates / (result.batch * a[result.p_stars - 1] * delta**2 * float(d) ** (-information_exponent / 2.0))
        )
    )
    x, rms = np.asarray(tracking.x), np.asarray(tracking.rms)
    if x.size == 0:
        return RateConstant(used, np.array([]), x, float("nan"), float("nan"))
    per_bin = used * x * (delta / rms) ** 2
    return RateConstant(used, per_bin, x, float(np.median(per_bin)), float(per_bin[np.argmin(np.abs(np.log(x)))]))


class Envelope(NamedTuple):
    """The best stream-averaged loss over every rate of the grid at each sample budget.

    Attributes:
        n: (N,) log-spaced budgets over the rule points' range (the window fixed in advance);
        loss: (N,) the envelope there (no tail); best: (N,) index of the rate that attains it;
        fit: power law of envelope + tail against n (None where too few points).
    """

    n: np.ndarray
    loss: np.ndarray
    best: np.ndarray
    fit: object


def envelope(result: UnstableResult, beta: float, points: int = 12) -> Envelope:
    r"""Best loss over the rate grid at each budget n, from the first to the second-to-last rule
    point (:func:`rule_points`, every :math:`P_* < P`), fitted with the tail beyond P added. It
    credits whichever rate does best at each n, so it does not fix the x-coordinates by the rule's
    construction; each run's loss is :func:`loss_at` (``nan``, i.e. not a candidate, outside the
    run's recorded range)."""
    points = require_int("points", points, 3)
    n_rule, _ = rule_points(result)
    finite = n_rule[:-1][np.isfinite(n_rule[:-1])]
    if finite.size < 2:
        return Envelope(np.array([]), np.array([]), np.array([], int), None)
    n = np.geomspace(finite.min(), finite.max(), points)
    table = np.stack([loss_at(result, i, n) for i in range(result.p_stars.size)])  # (K, N)
    masked = np.where(np.isfinite(table), table, np.inf)
    best = np.argmin(masked, axis=0)
    loss = masked[best, np.arange(n.size)]
    ok = np.isfinite(loss)
    tail = tail_beyond(result.coefficients.size, beta)
    return Envelope(n, np.where(ok, loss, np.nan), best, _fit_or_none(n[ok], loss[ok] + tail, min_points=3))


class LossFits(NamedTuple):
    """Loss against samples under both rules, with the infinite teacher's tail beyond P added.

    Attributes:
        tail: the added constant (:func:`companion.scaling.tail_beyond`).
        window: samples window of the stable-rule fit (the flow's 2nd to P/2-th escape).
        stable: fit of the stable rule's curve in that window; rule: fit of the rule points
            (every :math:`P_* < P`), each None where there are too few points to fit;
            rule_n, rule_loss: the points (:func:`rule_points`, no tail).
        rule_below: how many rule points lie below the stable curve at the same n (of those < P).
        fastest_below: at how many rule points the largest rate's run is at least as low (of those
            it reaches).
    """

    tail: float
    window: tuple[float, float]
    stable: object
    rule: object
    rule_n: np.ndarray
    rule_loss: np.ndarray
    rule_below: tuple[int, int]
    fastest_below: tuple[int, int]


def loss_fits(result: UnstableResult, beta: float) -> LossFits:
    """The chapter's loss-against-samples fits; windows fixed in advance (see :class:`LossFits`)."""
    P = result.coefficients.size
    tail = tail_beyond(P, beta)
    stable_n, stable_loss = result.samples[-1], np.mean(result.loss[-1], axis=0) + tail
    escapes = np.sort(result.flow_escapes[np.isfinite(result.flow_escapes)])
    window = cast(
        tuple[float, float], tuple(float(w) for w in result.batch * escapes[[1, P // 2 - 1]] / result.rates[-1])
    )
    stable = _fit_or_none(stable_n, stable_loss, window=window)
    n, loss = rule_points(result)
    rule = _fit_or_none(n[:-1], loss[:-1] + tail, min_points=3)
    below = np.array([loss[i] < loss_at(result, -1, n[i]) for i in range(n.size - 1)])
    fastest = np.array([loss_at(result, 0, n[i]) for i in range(n.size)])
    covered = np.isfinite(fastest)
    return LossFits(
        tail,
        window,
        stable,
        rule,
        n,
        loss,
        (int(below.sum()), int(below.size)),
        (int(np.sum(fastest[covered] <= loss[covered])), int(covered.sum())),
    )


def summarize(config: UnstableLR, result: UnstableResult) -> dict:
    """The experiment's headline numbers as plain JSON-able values (what the chapter reports)."""
    own = np.median(samples_to_top(result), axis=1)
    stable = np.median(samples_to_top_at(result, -1), axis=1)
    with np.errstate(invalid="ignore"):  # inf / inf where a target was never reached: nan
        gain = stable / own
    a = result.coefficients
    tracking = tracking_curve(result)
    same_only = tracking_curve(result, same_winner_only=True)
    fits = loss_fits(result, config.model.beta)
    env = envelope(result, config.model.beta)
    k = config.model.teacher().activation.information_exponent
    constant = rate_constant(result, config.delta, config.model.d, k, tracking)

    def fit(f):
        return None if f is None else {"slope": f.slope, "low": f.low, "high": f.high, "points": f.n}

    return {
        "model": {"d": config.model.d, "P": config.model.P, "m": config.model.m, "beta": config.model.beta},
        "batch": config.batch,
        "streams": config.streams,
        "delta": config.delta,
        "horizon": config.horizon,
        "p_stars": result.p_stars.tolist(),
        "rates": result.rates.tolist(),
        "gain": {"measured": gain.tolist(), "predicted": (a[result.p_stars - 1] / a[-1]).tolist()},
        "tracking": {
            "x": tracking.x.tolist(),
            "rms": tracking.rms.tolist(),
            "same_winner": tracking.same_winner.tolist(),
            "counts": tracking.counts.tolist(),
            "fit": fit(tracking.fit),
        },
        "loss": {
            "stable": fit(fits.stable),
            "rule": fit(fits.rule),
            "rule_below": list(fits.rule_below),
            "fastest_below": list(fits.fastest_below),
        },
        # Added with cache version unstable-1: "tracking" counts every escape; the earlier
        # same-winner-only measure is kept under its own name.
        "tracking_same_winner": {
            "x": same_only.x.tolist(),
            "rms": same_only.rms.tolist(),
            "counts": same_only.counts.tolist(),
            "fit": fit(same_only.fit),
        },
        "envelope": {
            "n": env.n.tolist(),
            "loss": [float(v) for v in env.loss],
            "best_p_star": [int(result.p_stars[i]) for i in env.best],
            "fit": fit(env.fit),
        },
        "rate_constant": {
            "used": constant.used,
            "value": constant.value,
            "at_one": constant.at_one,
            "per_bin": constant.per_bin.tolist(),
            "x": constant.x.tolist(),
        },
        "version": VERSION,
    }


def reproduce_unstable(preset: str, progress: bool = False) -> dict:
    """``python -m companion reproduce unstable_lr --preset ...``: run (or load) the experiment and
    return :func:`summarize`'s numbers."""
    config = unstable_lr(preset)
    return summarize(config, run_unstable(config, progress=progress))


#: Presets. ``book`` executes in the chapter on a 2-core CPU (d = 32, P = 16: every rate below the
#: stability edge; B = 32 with the rate scaled by B, so the samples are those of B = 1).
#: ``paper`` is the paper's teacher (d = 2048, P = 1024, h4, beta = 0.8) for a GPU, for P* <= 16:
#: the slowest run takes ~6.5e6 steps of B = 1024 (~6e16 flop; about half an hour per stream on one
#: H200 at the engine's measured fraction of the matmul rate — an estimate, not yet run). The stable
#: rule for all 1024 directions would need ~1e3 times more samples, out of reach at this size.
UNSTABLE_PRESETS: dict[str, UnstableLR] = {
    "test": UnstableLR(ModelConfig(d=16, P=8, m=16), p_stars=(1, 8), batch=16, streams=2, horizon=80.0, records=60),
    "book": UnstableLR(ModelConfig(d=32, P=16, m=32), p_stars=(1, 2, 4, 8, 16), batch=32, streams=8, horizon=80.0),
    # The book's experiment at twice the dimension: ~5 min on 2 CPU cores; its summary is committed
    # (book/results/unstable_lr_medium.json) and shown beside the executed book preset.
    "medium": UnstableLR(ModelConfig(d=64, P=16, m=32), p_stars=(1, 2, 4, 8, 16), batch=64, streams=8, horizon=160.0),
    "paper": UnstableLR(
        ModelConfig(d=2048, P=1024, m=1024),
        p_stars=(1, 2, 4, 8, 16),
        delta=0.5,
        batch=1024,
        streams=2,
        horizon=600.0,
        records=100,
        flow_dt=0.1,
    ),
}


def unstable_lr(preset: str = "book", **overrides) -> UnstableLR:
    """A preset of :class:`UnstableLR`, with fields overridden by keyword."""
    if preset not in UNSTABLE_PRESETS:
        raise ValueError(f"preset must be one of {sorted(UNSTABLE_PRESETS)}, got {preset!r}")
    return UNSTABLE_PRESETS[preset].replace(**overrides)
