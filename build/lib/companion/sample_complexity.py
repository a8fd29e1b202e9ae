r"""Samples online SGD needs to leave the search phase, minimized over the learning rate.

The theory's learning rate :math:`\eta\propto\Delta^2 a\,d^{-I}` is chosen so that SGD *tracks*
gradient flow; with it the sample count :math:`T/\eta\propto d^{I-1}\cdot d^{I}=d^{k_*-1}` follows
from the design. That law is therefore not tested by running SGD at that rate. What can be measured
is the number of samples SGD needs at the *best* learning rate: for each dimension d, the minimum
over a grid of rates (from the measured stability edge :func:`companion.sgd.stability_edge` down to
far below it) of the median number of samples to escape. At each d that minimum bounds the best rate's count
from above (the grid is finite); its growth exponent in d is the measured exponent, to compare with
:math:`k_*-1` (plain online SGD, Ben Arous et al.) and :math:`k_*/2` (the CSQ lower bound, reached
only by other algorithms).

One :class:`EscapeSweep` runs, for each d, ``seeds`` independent students of ``width`` neurons
against one teacher direction (:math:`a=1`, :math:`\sigma=h_4` by default), every student drawn
uniformly on the sphere from ``fold_in(key, d)`` so that starts and data streams are independent
across d (a counter-based generator would otherwise give every d the same leading coordinates).
At a given d the *same* starts and streams are used at every rate (common random numbers), so the
minimum over rates compares rates, not luck. A run escapes when some neuron's squared overlap
reaches ``threshold``; a run that has not escaped by the horizon, or that diverged, counts as
never (+inf), and medians are taken with those runs included.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from companion._perturb import perturb_start
from companion._validate import require_int, require_real
from companion.cache import Cache
from companion.sgd import SGDDivergenceError, log_steps, simulate, stability_edge
from companion.teacher import make_teacher

#: Cache version of this module's entries; bump when the computation changes meaning.
VERSION = "sample-complexity-1"


@dataclass(frozen=True)
class EscapeSweep:
    r"""Samples to escape the search phase against d, over a grid of learning rates.

    Attributes:
        dims: input dimensions d (strictly increasing, each >= 8).
        fractions: learning rates as fractions of the stability edge
            :math:`\eta_{\rm edge}(d, B)` (each in (0, 1], strictly decreasing).
        seeds: independent students (and data streams) per d, >= 3.
        width: neurons per student m (the run escapes with its first neuron).
        batch: fresh samples per step B; samples are B times steps.
        horizon: flow-time horizon in units of :math:`d/8`, the flow's escape time of one neuron
            starting at overlap² 1/d (:math:`T = 1/(8a\,\bar v^2(0))`); runs stop there.
        init_norm_sq: initial squared norm of every neuron (small: the output starts near zero).
        threshold: squared overlap that counts as escaped.
        records: log-spaced record steps per run (the resolution of the escape time).
        key: seed of the PRNG key.
    """

    dims: tuple[int, ...] = (16, 32, 64)
    fractions: tuple[float, ...] = (0.5, 0.125, 1 / 32)
    seeds: int = 8
    width: int = 8
    batch: int = 64
    horizon: float = 2.0
    init_norm_sq: float = 0.01
    threshold: float = 0.5
    records: int = 200
    key: int = 11

    def __post_init__(self):
        dims = tuple(require_int("dims", d, 8) for d in self.dims)
        if len(dims) < 2 or any(b <= a for a, b in zip(dims, dims[1:], strict=False)):
            raise ValueError(f"dims must be at least two strictly increasing ints >= 8, got {self.dims}")
        fractions = tuple(require_real("fractions", f, low=0.0, low_open=True, high=1.0) for f in self.fractions)
        if not fractions or any(b >= a for a, b in zip(fractions, fractions[1:], strict=False)):
            raise ValueError(f"fractions must be strictly decreasing in (0, 1], got {self.fractions}")
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "fractions", fractions)
        require_int("seeds", self.seeds, 3)
        require_int("width", self.width, 1)
        require_int("batch", self.batch, 1)
        require_real("horizon", self.horizon, low=0.0, low_open=True)
        require_real("init_norm_sq", self.init_norm_sq, low=0.0, low_open=True, high=0.1)
        require_real("threshold", self.threshold, low=0.0, low_open=True, high=1.0, high_open=True)
        require_int("records", self.records, 10)
        require_int("key", self.key, 0)

    def replace(self, **changes) -> EscapeSweep:
        return dataclasses.replace(self, **changes)

    def lr(self, d: int, fraction: float) -> float:
        """The learning rate ``fraction`` × :func:`companion.sgd.stability_edge` (d, B)."""
        return fraction * stability_edge(d, self.batch)

    def steps(self, d: int, fraction: float) -> int:
        """SGD steps that reach the flow-time horizon ``horizon`` × d/8 at this rate."""
        return max(10, int(math.ceil(self.horizon * d / 8 / self.lr(d, fraction))))


#: A small preset for tests (seconds on one core).
TEST = EscapeSweep(dims=(8, 16), fractions=(0.5, 0.125), seeds=3, width=4, batch=16, records=60)
#: The chapter's preset: rates over a factor 16 below half the stability edge (estimated ~70 s CPU: 107 s was measured with horizon 3, and the cost scales with the horizon).
BOOK = EscapeSweep()


def initial_students(sweep: EscapeSweep, d: int) -> np.ndarray:
    r"""The ``seeds`` initial students at dimension d, shape (seeds, width, d).

    Directions uniform on :math:`\mathbb S^{d-1}`, squared norms ``init_norm_sq``; drawn from
    ``fold_in(key(sweep.key), d)``, independently across d.
    """
    key = jax.random.fold_in(jax.random.key(sweep.key), d)
    g = np.array(jax.random.normal(jax.random.fold_in(key, 0), (sweep.seeds, sweep.width, d)), np.float64)
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    return perturb_start((math.sqrt(sweep.init_norm_sq) * g).astype(np.float32))


def escape_samples(sweep: EscapeSweep, d: int, fraction: float) -> np.ndarray:
    """Samples to escape of each of the ``seeds`` runs at d and one rate, shape (seeds,); +inf for
    a run that did not escape by the horizon or diverged."""
    teacher = make_teacher(d, 1, coefficients=[1.0])
    V0 = jnp.asarray(initial_students(sweep, d))
    lr = sweep.lr(d, fraction)
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(jax.random.key(sweep.key), d), 1), sweep.seeds)
    try:
        run = simulate(teacher, V0, keys, lr, log_steps(sweep.steps(d, fraction), sweep.records), batch=sweep.batch)
    except SGDDivergenceError:
        return np.full(sweep.seeds, np.inf)
    t = np.asarray(run.escape_times(sweep.threshold), np.float64)[:, 0]  # flow time, inf if never
    return t / lr * sweep.batch


@dataclass(frozen=True)
class EscapeSweepResult:
    """Samples to escape, shape (dims, fractions, seeds), and the sweep that made them."""

    sweep: EscapeSweep
    samples: np.ndarray

    @property
    def medians(self) -> np.ndarray:
        """Median samples to escape per (d, rate), never-escaped runs included (+inf if most never did)."""
        return np.median(self.samples, axis=-1)

    @property
    def best(self) -> np.ndarray:
        """Per d, the minimum over rates of the median samples to escape, shape (dims,)."""
        return self.medians.min(axis=1)

    @property
    def best_fraction(self) -> np.ndarray:
        """Per d, the rate (as a fraction of the stability edge) that attains :attr:`best`."""
        return np.asarray(self.sweep.fractions)[np.argmin(self.medians, axis=1)]

    @property
    def never(self) -> np.ndarray:
        """Runs that never escaped (or diverged), per (d, rate), shape (dims, fractions)."""
        return np.sum(~np.isfinite(self.samples), axis=-1)

    def exponent(self, medians: np.ndarray | None = None) -> float:
        """Least-squares slope of log(min-over-rates median samples) against log d."""
        y = self.best if medians is None else medians
        if not np.all(np.isfinite(y)):
            return float("nan")
        return float(np.polyfit(np.log(np.asarray(self.sweep.dims, float)), np.log(y), 1)[0])

    def exponent_at(self, fraction: float) -> float:
        """The same slope at one fixed rate fraction of the grid (nan if some median never escaped)."""
        j = list(self.sweep.fractions).index(fraction)
        return self.exponent(self.medians[:, j])

    def bootstrap(self, reps: int = 400, seed: int = 0, level: float = 0.9) -> tuple[float, float]:
        """Interval of :meth:`exponent` over resampled seeds (the same resample at every rate of a d,
        independent across d); resamples with a non-finite minimum are dropped."""
        rng = np.random.default_rng(seed)
        S = self.sweep.seeds
        slopes = []
        for _ in range(reps):
            resampled = np.stack([self.samples[i][:, rng.integers(0, S, S)] for i in range(len(self.sweep.dims))])
            best = np.median(resampled, axis=-1).min(axis=1)
            if np.all(np.isfinite(best)):
                slopes.append(np.polyfit(np.log(self.sweep.dims), np.log(best), 1)[0])
        if not slopes:
            return float("nan"), float("nan")
        lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def summary(self) -> dict:
        """JSON-ready summary (the exponent, the attaining rates, the medians, the never counts)."""
        lo, hi = self.bootstrap()
        return {
            "dims": list(self.sweep.dims),
            "fractions": list(self.sweep.fractions),
            "median_samples": [[float(x) for x in row] for row in self.medians],
            "best_samples": [float(x) for x in self.best],
            "best_fraction": [float(x) for x in self.best_fraction],
            "exponent": self.exponent(),
            "exponent_interval": [lo, hi],
            "never": self.never.tolist(),
        }


def run_escape_sweep(sweep: EscapeSweep, cache: Cache | bool | None = True) -> EscapeSweepResult:
    """Run (or load from the cache, one entry per d and rate) every run of ``sweep``."""
    store = Cache.resolve(cache, namespace="escape", version=VERSION)
    out = np.empty((len(sweep.dims), len(sweep.fractions), sweep.seeds))
    for i, d in enumerate(sweep.dims):
        for j, f in enumerate(sweep.fractions):
            # keyed by what the runs at (d, rate) depend on, not by the rest of the grid
            entry = {
                **{k: v for k, v in dataclasses.asdict(sweep).items() if k not in ("dims", "fractions")},
                "d": d,
                "fraction": f,
            }
            hit = store.load(entry) if store is not None else None
            if hit is not None:
                out[i, j] = hit[0]["samples"]
                continue
            out[i, j] = escape_samples(sweep, d, f)
            if store is not None:
                store.save(entry, {"samples": out[i, j]})
    return EscapeSweepResult(sweep, out)
