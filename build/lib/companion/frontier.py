r"""The compute-optimal frontier: exponent fits shared by every sweep, and the online-SGD width sweep.

**Fits (fixed in advance, the same for measured, predicted and SGD sweeps).** With the tail
:math:`\tfrac12\sum_{p>P}a_p^2` added to every loss (:func:`companion.scaling.tail_beyond`):

* time exponent: the widest student's loss over the window from its 4th to its (P/2)-th escape;
* width exponent: the final loss against m over the widths :math:`m \le P/2` (at least 4 of them);
* frontier exponent: the lower envelope over widths of loss against compute :math:`c = m t`, fitted
  from ten times the compute at which the narrowest student's first direction escapes to a tenth
  of the widest run's total compute.

**The online-SGD width sweep** (:class:`SGDWidthSweep`) trains every width with the paper's
algorithm, online SGD on fresh Gaussian samples, through the SGD engine and its results cache
(:func:`companion.sgd.run_sgd`). Time is gradient-flow time :math:`t = \eta\cdot\text{steps}`.

*Step size.* Two rules are available:

* ``"stable"`` (default): half the measured stability edge, :math:`\eta = 0.0044\,B/d`
  (:func:`companion.sgd.stable_lr`). The noise a step adds per unit of flow time is
  :math:`\propto\eta/B`, so this keeps :math:`\eta/B\cdot d` fixed; reaching flow time t costs
  :math:`Bt/\eta = t\,d/0.0044` samples whatever B.
* ``"theory"``: the paper's :math:`\eta = c\,B\,a_{\min}\Delta^2 d^{-I}` (:func:`companion.sgd.theory_lr`,
  :math:`I = k_*/2 = 2`), chosen so that SGD's escape times stay within :math:`1\pm\Delta` of the
  flow's. It costs :math:`\eta_{\rm stable}/\eta_{\rm theory}` times more samples, a ratio that grows
  like :math:`d/a_{\min}` (about 60 at d = 64, P = 32, Δ = 0.1; about :math:`10^{5}` at paper scale).

*Compute* is counted as samples × width, :math:`c = B\cdot\text{steps}\cdot m = (t/\eta)Bm`. One
sample costs a forward pass (:math:`2md` FLOPs for the m inner products) and a backward pass
(:math:`4md`), so FLOPs :math:`\approx 6d\,c`: at fixed d the two differ by a constant and the
frontier's exponent is the same. (Gradient descent on the population loss has no samples; its
compute is :math:`m t` in flow time, which is proportional to samples × width at a fixed
:math:`\eta/B`.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from companion._validate import require_int, require_real
from companion.config import ModelConfig

# ----------------------------------------------------------------------------------------------
# Exponent fits (any sweep with times (R,), loss (S, W, R), escapes (S, W, P), widths (W,))
# ----------------------------------------------------------------------------------------------


class Exponents(NamedTuple):
    """Fitted exponents per seed (shape (S,) each) and the frontier's fit windows.

    Attributes: time, width, frontier: slopes (S,); frontier_windows: (S, 2) compute windows;
    envelopes: (S, G) the lower envelope on ``grid`` (G,).
    """

    time: np.ndarray
    width: np.ndarray
    frontier: np.ndarray
    frontier_windows: np.ndarray
    envelopes: np.ndarray
    grid: np.ndarray


def fit_exponents(
    times, loss, escapes, widths, P: int, beta: float, compute_scale=None, grid_points: int = 300
) -> Exponents:
    r"""Time, width and frontier exponents of a sweep, with the fixed windows of the module docstring.

    Args:
        times: (R,) record times (flow time).
        loss: (S, W, R) loss curves (without the tail; it is added here).
        escapes: (S, W, P) escape times (``inf`` if none).
        widths: (W,) increasing.
        P, beta: the teacher (for the tail beyond P and the P/2 window).
        compute_scale: compute per unit flow time per neuron (1 for gradient descent, :math:`B/\eta`
            samples for SGD); default 1.
    Returns:
        :class:`Exponents`; a slope is nan where its window holds too few points.
    """
    from companion import scaling as sc

    t = np.asarray(times, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    escapes = np.asarray(escapes, dtype=np.float64)
    widths = np.asarray(widths)
    S, W, R = loss.shape
    if t.shape != (R,) or escapes.shape[:2] != (S, W) or widths.shape != (W,):
        raise ValueError(
            f"times (R,), loss (S, W, R), escapes (S, W, P), widths (W,) must agree, got "
            f"{t.shape}, {loss.shape}, {escapes.shape}, {widths.shape}"
        )
    scale = 1.0 if compute_scale is None else require_real("compute_scale", compute_scale, low=0.0, low_open=True)
    tail = sc.tail_beyond(P, beta)
    narrow = widths <= P // 2
    t_first = t[t > 0][0]
    grid = np.logspace(np.log10(scale * widths[0] * t_first), np.log10(scale * widths[-1] * t[-1]), grid_points)
    time_s, width_s, front_s, windows, envs = [], [], [], [], []
    for s in range(S):
        order = np.sort(escapes[s, -1])
        try:
            fit = sc.fit_power_law(t, loss[s, -1] + tail, window=(order[3], order[P // 2 - 1]))
            time_s.append(fit.slope)
        except (ValueError, IndexError):
            time_s.append(np.nan)
        try:
            width_s.append(sc.fit_power_law(widths[narrow], loss[s, narrow, -1] + tail, min_points=4).slope)
        except ValueError:
            width_s.append(np.nan)
        curves = [(scale * m * t, loss[s, w] + tail) for w, m in enumerate(widths)]
        env = sc.lower_envelope(curves, grid)
        window = (10 * scale * widths[0] * np.min(escapes[s, 0]), scale * widths[-1] * t[-1] / 10)
        windows.append(window)
        envs.append(env)
        try:
            front_s.append(sc.fit_power_law(grid, env, window=window).slope)
        except ValueError:
            front_s.append(np.nan)
    return Exponents(np.array(time_s), np.array(width_s), np.array(front_s), np.array(windows), np.array(envs), grid)


# ----------------------------------------------------------------------------------------------
# The online-SGD width sweep
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SGDWidthSweep:
    r"""Online SGD (fresh samples every step) for every width and seed.

    Attributes:
        model: teacher and initialization (``m`` and ``seed`` replaced per run).
        widths: student widths, strictly increasing.
        seeds: initialization seeds.
        horizon: final gradient-flow time :math:`\eta\cdot\text{steps}`.
        batch: fresh samples per step B (the paper: 1; a batch of B at :math:`\eta` follows the same
            flow with the same noise per unit time as B single-sample steps at :math:`\eta/B`).
        rule: ``"stable"`` (half the measured stability edge) or ``"theory"`` (:func:`companion.sgd.theory_lr`).
        delta: Δ of the theory rule.
        records: log-spaced record steps per run.
    """

    model: ModelConfig
    widths: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    horizon: float = 400.0
    batch: int = 64
    rule: str = "stable"
    delta: float = 0.1
    records: int = 96

    def __post_init__(self):
        if not self.widths or not self.seeds:
            raise ValueError("widths and seeds must be non-empty tuples")
        for m in self.widths:
            require_int("widths", m, 1)
        for s in self.seeds:
            require_int("seeds", s, 0)
        if tuple(sorted(set(self.widths))) != tuple(self.widths):
            raise ValueError(f"widths must be strictly increasing, got {self.widths}")
        require_real("horizon", self.horizon, low=0.0, low_open=True)
        require_int("batch", self.batch, 1)
        require_int("records", self.records, 8)
        require_real("delta", self.delta, low=0.0, low_open=True)
        if self.rule not in ("stable", "theory"):
            raise ValueError(f"rule must be 'stable' or 'theory', got {self.rule!r}")

    @property
    def lr(self) -> float:
        """The learning rate of the rule (the same for every width; it depends on d, B and the teacher)."""
        from companion.sgd import stable_lr, theory_lr

        if self.rule == "stable":
            return stable_lr(self.model.d, self.batch)
        return theory_lr(self.model, delta=self.delta, batch=self.batch)

    @property
    def steps(self) -> int:
        return int(np.ceil(self.horizon / self.lr))

    @property
    def samples_per_time(self) -> float:
        r"""Samples per unit of flow time, :math:`B/\eta`: compute :math:`c = (B/\eta)\,m\,t`."""
        return self.batch / self.lr

    def configs(self):
        from companion.sgd import SGDConfig

        lr, steps = self.lr, self.steps
        for seed in self.seeds:
            for m in self.widths:
                yield SGDConfig(
                    self.model.replace(m=m, seed=seed), lr=lr, steps=steps, batch=self.batch, record=self.records
                )

    def replace(self, **changes) -> SGDWidthSweep:
        return dataclasses.replace(self, **changes)


class SGDSweepResult(NamedTuple):
    """Arrays of an :class:`SGDWidthSweep`, indexed ``[seed, width, ...]``.

    Attributes:
        times: (R,) flow times :math:`\\eta\\cdot\\text{steps}` of the records (common to all runs).
        loss: (S, W, R) closed-form population loss.
        escapes: (S, W, P) first time :math:`\\max_k\\bar v_{k,p}^2 \\ge 1/2` (interpolated; ``inf`` if never).
        learned: (S, W, P) first time :math:`\\sum_k\\|v_k\\|^2\\bar v_{k,p}^4 \\ge a_p/2`.
        widths: (W,) the widths m.
        seeds: (S,) the seeds.
        lr: the learning rate.
        batch: the batch size B.
        samples: (R,) samples drawn by each record.
        wall_time: (S, W) seconds of stepping (0 for cached runs).
    """

    times: np.ndarray
    loss: np.ndarray
    escapes: np.ndarray
    learned: np.ndarray
    widths: np.ndarray
    seeds: np.ndarray
    lr: float
    batch: int
    samples: np.ndarray
    wall_time: np.ndarray


def run_sgd_width_sweep(sweep: SGDWidthSweep, cache=True, progress: bool = False) -> SGDSweepResult:
    """Run (or load from the SGD engine's cache) every run of the sweep."""
    from companion.dynamics import crossing_time
    from companion.sgd import run_sgd

    configs = list(sweep.configs())
    iterator = configs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(configs, desc="SGD width sweep", unit="run")
    S, W = len(sweep.seeds), len(sweep.widths)
    loss, escapes, learned, walls = [], [], [], []
    times = None
    for config in iterator:
        res = run_sgd(config, cache=cache)
        times = res.times
        a = np.asarray(config.model.teacher().coefficients, dtype=np.float64)
        C = res.overlaps[0].astype(np.float64)  # (R, m, P)
        w = res.norms_sq[0].astype(np.float64)  # (R, m)
        escapes.append(crossing_time(times, np.max(C**2, axis=1), 0.5))
        learned.append(crossing_time(times, np.einsum("rm,rmp->rp", w, C**4) / a, 0.5))
        loss.append(res.loss[0])
        walls.append(res.wall_time)

    def stack(x):
        return np.stack(x).reshape(S, W, *np.asarray(x[0]).shape)

    steps = np.asarray(times) / sweep.lr
    return SGDSweepResult(
        np.asarray(times),
        stack(loss),
        stack(escapes),
        stack(learned),
        np.asarray(sweep.widths),
        np.asarray(sweep.seeds),
        sweep.lr,
        sweep.batch,
        steps * sweep.batch,
        np.asarray(walls).reshape(S, W),
    )


#: Presets. ``book`` executes in the scaling chapter on 2 CPU cores (small on purpose); ``medium``
#: is a committed background run; ``paper`` is the paper's teacher (d = 2048, P = 1024, h4,
#: beta = 0.8) for a GPU (B = 1 is the paper's online SGD; B = 256 at the same eta/B is the same
#: noise per unit time and is what fits).
SGD_WIDTH_SWEEPS: dict[str, SGDWidthSweep] = {
    # B = 4d: the largest batch at which the stability edge was measured to grow like B, so the
    # fewest steps for a given flow time (eta = 0.0176 whatever d).
    "test": SGDWidthSweep(ModelConfig(d=16, P=8, m=1), widths=(2, 4, 8), horizon=60.0, batch=64, records=16),
    "book": SGDWidthSweep(ModelConfig(d=32, P=16, m=1), widths=(2, 4, 8, 16, 32), horizon=300.0, batch=128),
    "medium": SGDWidthSweep(ModelConfig(d=64, P=32, m=1), widths=(4, 8, 16, 32, 64), horizon=400.0, batch=256),
    # large: the largest SGD sweep committed from 2 CPU cores (book/results/width_sweep_sgd_large.json);
    # its horizon is about 6.7 times the widest student's leading-order predicted learning time of its
    # last direction (180), the same multiple as medium's (400 / 60).
    "large": SGDWidthSweep(ModelConfig(d=128, P=64, m=1), widths=(8, 16, 32, 64, 128), horizon=1200.0, batch=512),
    # xlarge: the executed gradient-descent sweep's teacher, widths and horizon (d = 256, P = 128,
    # book preset of companion.experiments), seed 0, trained by online SGD: its GD twin *is* that sweep.
    "xlarge": SGDWidthSweep(
        ModelConfig(d=256, P=128, m=1), widths=(8, 16, 32, 64, 128, 256), horizon=1500.0, batch=1024
    ),
    "paper": SGDWidthSweep(
        ModelConfig(d=2048, P=1024, m=1),
        widths=(32, 64, 128, 256, 512, 1024, 2048),
        horizon=2.0e4,
        batch=8192,
        records=128,
    ),
}


def sgd_width_sweep(preset: str = "book", **overrides) -> SGDWidthSweep:
    """A preset of :class:`SGDWidthSweep`, with fields overridden by keyword."""
    if preset not in SGD_WIDTH_SWEEPS:
        raise ValueError(f"preset must be one of {sorted(SGD_WIDTH_SWEEPS)}, got {preset!r}")
    return SGD_WIDTH_SWEEPS[preset].replace(**overrides)


def gd_twin(sweep: SGDWidthSweep, dt: float = 0.1, records: int | None = None):
    """The gradient-descent width sweep (:class:`companion.experiments.WidthSweep`) with the same
    teacher, widths, seeds and horizon: the flow the SGD sweep should follow. ``records`` defaults to
    the width sweep's own, so the twin of ``xlarge`` is the executed ``book`` sweep's seed 0 run for run."""
    from companion.experiments import WidthSweep

    extra = {} if records is None else {"records": records}
    return WidthSweep(sweep.model, widths=sweep.widths, seeds=sweep.seeds, horizon=sweep.horizon, dt=dt, **extra)


def reproduce_width_sweep_sgd(preset: str, progress: bool = False, full: bool = False) -> dict:
    """``reproduce width_sweep_sgd --preset ...``: run (or load) the SGD sweep and fit its exponents.

    Returns a JSON-able summary: the sweep, the learning rate and batch, the fitted exponents per
    seed, the final losses; with ``full`` also every loss curve, escape and learning time.
    """
    from companion import scaling as sc

    sweep = sgd_width_sweep(preset)
    result = run_sgd_width_sweep(sweep, progress=progress)
    fits = fit_exponents(
        result.times,
        result.loss,
        result.escapes,
        result.widths,
        sweep.model.P,
        sweep.model.beta,
        compute_scale=sweep.samples_per_time,
    )
    summary = {
        "experiment": "width_sweep_sgd",
        "preset": preset,
        "method": "online SGD, fresh Gaussian samples",
        "sweep": dataclasses.asdict(sweep),
        "lr": sweep.lr,
        "batch": sweep.batch,
        "steps": sweep.steps,
        "samples_per_time": sweep.samples_per_time,
        "exponents": {
            "time": fits.time.tolist(),
            "width": fits.width.tolist(),
            "frontier": fits.frontier.tolist(),
            "theory": {
                "time": sc.time_exponent(sweep.model.beta),
                "width": sc.width_exponent(sweep.model.beta),
                "frontier": sc.compute_exponent(sweep.model.beta),
            },
        },
        "final_loss": result.loss[..., -1].tolist(),
        "stepping_seconds": result.wall_time.tolist(),
    }
    if full:
        summary.update(
            {
                "times": result.times,
                "loss": result.loss,
                "escapes": result.escapes,
                "learned": result.learned,
                "widths": result.widths,
                "seeds": result.seeds,
                "samples": result.samples,
            }
        )
    return summary
