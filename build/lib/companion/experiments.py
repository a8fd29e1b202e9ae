r"""Named experiments with ``test`` / ``book`` / ``paper`` presets, cached run by run.

An experiment is one frozen config; running it returns plain arrays. Each elementary run (one
seed, one width) is stored in the on-disk cache (:mod:`companion.cache`) as soon as it finishes,
so a rerun loads instantly and an interrupted sweep resumes where it stopped.

* ``width_sweep``: full training runs over a grid of widths m (and seeds) for one teacher: the
  data of the scaling-law chapter (loss against time, width and compute).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from companion._validate import require_int, require_real
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import crossing_time, direction_escapes, euler_flow, log_times

#: Bump when a run's meaning changes, so that old cache entries are not reused.
VERSION = "2"


@dataclass(frozen=True)
class FlowRun:
    """One gradient-descent run on the population loss (Euler steps of size ``dt``), recorded at
    ``records`` log-spaced times up to ``horizon``. The cache key of a run."""

    model: ModelConfig
    horizon: float
    dt: float = 0.1
    records: int = 300

    def __post_init__(self):
        # normalized, so that FlowRun(m, 1500) and FlowRun(m, 1500.0) are one run (one cache key)
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be a companion.config.ModelConfig, got {type(self.model).__name__}")
        object.__setattr__(self, "horizon", require_real("horizon", self.horizon, low=0.0, low_open=True))
        object.__setattr__(self, "dt", require_real("dt", self.dt, low=0.0, low_open=True))
        object.__setattr__(self, "records", require_int("records", self.records, 8))

    def times(self) -> np.ndarray:
        return log_times(self.horizon, self.records, t_min=self.horizon / 5000.0)


def run_flow(run: FlowRun, cache: Cache | None = None) -> dict[str, np.ndarray]:
    r"""Execute (or load) one run: ``times``, ``loss`` (R,); per direction (P,): ``escapes`` (the
    winner's overlap² reaches 1/2), ``winners`` and ``learned`` (the student's weight on
    :math:`v_p^{*\otimes k_*}`, :math:`\sum_k w_k \bar v_{k,p}^{k_*}`, reaches :math:`a_p/2`: the direction's
    term leaves the loss); ``final_norms_sq`` (m,)."""
    if cache is not None:
        hit = cache.load(run)
        if hit is not None:
            return hit[0]
    teacher, V0 = run.model.build()
    trajectory = euler_flow(V0, teacher, run.times(), dt=run.dt)
    winners, escapes = direction_escapes(trajectory)
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    # The loss drops once the student's weight on v_p^{(x)k*}, sum_k w_k C_kp^k*, approaches a_p:
    # after the overlap escaped, when the norms have grown (logistically).
    k_star = teacher.activation.information_exponent
    held = (
        np.einsum(
            "rm,rmp->rp", trajectory.norms_sq.astype(np.float64), trajectory.overlaps.astype(np.float64) ** k_star
        )
        / a
    )
    learned = crossing_time(trajectory.times, held, 0.5)
    arrays = {
        "times": trajectory.times,
        "loss": trajectory.loss.astype(np.float64),
        "escapes": escapes,
        "winners": winners,
        "learned": learned,
        "final_norms_sq": trajectory.norms_sq[-1].astype(np.float64),
    }
    if cache is not None:
        cache.save(run, arrays)
    return arrays


class IdleNeurons(NamedTuple):
    r"""The neurons of one run that win no direction (:func:`idle_neurons`), at the run's horizon.

    Attributes:
        idle: neurons that are no direction's winner (first to overlap² 1/2), shape (n,).
        aligned_with: for each, the direction of its largest final overlap², shape (n,).
        overlap_sq: that overlap², shape (n,).
        duplicate: the direction has another winner and the overlap² is at least 0.9: the neuron
            followed a direction another neuron won, instead of moving on to one of its own, shape (n,).
        norm_share: its final norm² over the direction's :math:`a_q` (the part of the direction it holds), shape (n,).
    """

    idle: np.ndarray
    aligned_with: np.ndarray
    overlap_sq: np.ndarray
    duplicate: np.ndarray
    norm_share: np.ndarray


def idle_neurons(run: FlowRun) -> IdleNeurons:
    """Run ``run`` again (uncached: the cache keeps summaries, not the final overlaps) and describe
    the neurons that win no direction. Cost: one gradient-descent run; meant for small sweeps."""
    teacher, V0 = run.model.build()
    trajectory = euler_flow(V0, teacher, run.times(), dt=run.dt)
    winners, _ = direction_escapes(trajectory)
    winners = np.asarray(winners)
    c2 = np.asarray(trajectory.overlaps[-1], dtype=np.float64) ** 2  # (m, P)
    idle = np.setdiff1d(np.arange(c2.shape[0]), winners[winners >= 0])
    best = np.argmax(c2[idle], axis=1) if idle.size else np.zeros(0, dtype=np.int64)
    overlap_sq = c2[idle, best]
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    norms = np.asarray(trajectory.norms_sq[-1], dtype=np.float64)[idle]
    duplicate = (winners[best] >= 0) & (overlap_sq >= 0.9)
    return IdleNeurons(idle, best, overlap_sq, duplicate, norms / a[best])


@dataclass(frozen=True)
class WidthSweep:
    r"""Gradient descent on the population loss for every width in ``widths`` and seed in ``seeds``.

    Attributes:
        model: the teacher and initialization (its ``m`` and ``seed`` are replaced per run).
        widths: the student widths m.
        seeds: initialization seeds.
        horizon: final gradient-flow time of every run.
        dt: Euler step (one step = one full-batch gradient step with learning rate ``dt``).
        records: log-spaced record times per run.
    """

    model: ModelConfig
    widths: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    horizon: float = 1500.0
    dt: float = 0.1
    records: int = 300

    def __post_init__(self):
        if (
            not isinstance(self.widths, (tuple, list))
            or not isinstance(self.seeds, (tuple, list))
            or not self.widths
            or not self.seeds
        ):
            raise ValueError(f"widths and seeds must be non-empty tuples, got {self.widths!r} and {self.seeds!r}")
        widths = tuple(require_int("widths", m, 1) for m in self.widths)
        seeds = tuple(require_int("seeds", s, 0) for s in self.seeds)
        if tuple(sorted(set(widths))) != widths:
            raise ValueError(f"widths must be strictly increasing, got {widths}")
        run = FlowRun(self.model, self.horizon, self.dt, self.records)  # validates and normalizes the rest
        for name, value in (
            ("widths", widths),
            ("seeds", seeds),
            ("horizon", run.horizon),
            ("dt", run.dt),
            ("records", run.records),
        ):
            object.__setattr__(self, name, value)

    def runs(self):
        for seed in self.seeds:
            for m in self.widths:
                yield FlowRun(self.model.replace(m=m, seed=seed), self.horizon, self.dt, self.records)

    def replace(self, **changes) -> WidthSweep:
        return dataclasses.replace(self, **changes)


class SweepResult(NamedTuple):
    """Arrays of a :class:`WidthSweep`, indexed ``[seed, width, ...]``.

    Attributes:
        times: (R,) record times (the same for every run).
        loss: (S, W, R) closed-form population loss.
        escapes: (S, W, P) escape time of each teacher direction (``inf`` if not learned).
        learned: (S, W, P) time the student's weight on it reached :math:`a_p/2` (``inf`` if never).
        winners: (S, W, P) the neuron that learned it (-1 if none).
        widths: (W,), seeds: (S,).
    """

    times: np.ndarray
    loss: np.ndarray
    escapes: np.ndarray
    learned: np.ndarray
    winners: np.ndarray
    widths: np.ndarray
    seeds: np.ndarray


def run_width_sweep(sweep: WidthSweep, cache: Cache | bool | None = True, progress: bool = False) -> SweepResult:
    """Run (or load from the cache) every run of a sweep.

    Args:
        sweep: the experiment.
        cache: a :class:`Cache`, ``True`` for the default cache, or ``False``/``None`` for none.
        progress: show a progress bar over runs.
    """
    cache = Cache.resolve(cache, namespace="width_sweep", version=VERSION)
    runs = list(sweep.runs())
    iterator = runs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(runs, desc="width sweep", unit="run")
    results = [run_flow(run, cache) for run in iterator]
    S, W = len(sweep.seeds), len(sweep.widths)

    def stack(name):
        return np.stack([r[name] for r in results]).reshape(S, W, *results[0][name].shape)

    return SweepResult(
        results[0]["times"],
        stack("loss"),
        stack("escapes"),
        stack("learned"),
        stack("winners"),
        np.asarray(sweep.widths),
        np.asarray(sweep.seeds),
    )


#: Presets of the width sweep. ``book`` executes in the scaling chapter on a 2-core CPU; ``paper``
#: is the paper's teacher (d = 2048, P = 1024, h4, beta = 0.8) for a GPU.
WIDTH_SWEEPS: dict[str, WidthSweep] = {
    "test": WidthSweep(ModelConfig(d=32, P=16, m=1), widths=(4, 8, 16, 32), horizon=300.0, records=120),
    "book": WidthSweep(ModelConfig(d=256, P=128, m=1), widths=(8, 16, 32, 64, 128, 256), seeds=(0, 1), horizon=1500.0),
    # medium: a committed background run (book/results/width_sweep_medium.json), not executed by the book.
    "medium": WidthSweep(
        ModelConfig(d=512, P=256, m=1), widths=(16, 32, 64, 128, 256, 512), seeds=(0,), horizon=5000.0
    ),
    # large: the largest gradient-descent sweep committed from 2 CPU cores (about an hour,
    # book/results/width_sweep_large.json); its horizon covers the leading-order predicted learning
    # time of every direction a width learns (at most 3843 for m <= 256, 3670 for m = 1024) plus 50%.
    "large": WidthSweep(
        ModelConfig(d=1024, P=512, m=1), widths=(32, 64, 128, 256, 512, 1024), seeds=(0,), horizon=6000.0
    ),
    "paper": WidthSweep(
        ModelConfig(d=2048, P=1024, m=1), widths=(32, 64, 128, 256, 512, 1024, 2048), horizon=2.0e4, dt=0.1, records=400
    ),
}


def width_sweep(preset: str = "book", **overrides) -> WidthSweep:
    """A preset of :class:`WidthSweep`, with fields overridden by keyword."""
    if preset not in WIDTH_SWEEPS:
        raise ValueError(f"preset must be one of {sorted(WIDTH_SWEEPS)}, got {preset!r}")
    return WIDTH_SWEEPS[preset].replace(**overrides)


def reproduce_width_sweep(preset: str, progress: bool = False) -> dict:
    """``python -m companion reproduce width_sweep --preset ...``: run (or load) the sweep."""
    sweep = width_sweep(preset)
    result = run_width_sweep(sweep, progress=progress)
    return {"runs": len(list(sweep.runs())), "final_loss": result.loss[..., -1].tolist()}
