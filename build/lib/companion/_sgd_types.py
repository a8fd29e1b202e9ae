r"""Online SGD's configuration, state and result types (:mod:`companion.sgd` re-exports them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import equinox as eqx
import numpy as np
from jaxtyping import Array

from companion._core import check_record, log_steps, record_steps
from companion._validate import require_int, require_real
from companion.config import ModelConfig

__all__ = ["SGDConfig", "SGDResult", "SGDState", "auto_block", "log_steps"]


def auto_block(batch: int, d: int) -> int:
    """Steps per drawn block: about 2^18 sampled numbers (1 MiB of float32), 1..1024 steps."""
    return int(max(1, min(1024, (1 << 18) // (batch * d))))


@dataclass(frozen=True)
class SGDConfig:
    r"""One online-SGD experiment, validated at construction (a ValueError names the field).

    Attributes:
        model: teacher and initial student (:class:`companion.config.ModelConfig`).
        lr: learning rate :math:`\eta > 0`; gradient-flow time is :math:`t = \eta\cdot\text{steps}`.
        steps: number of SGD steps (>= 1).
        batch: fresh samples per step, B >= 1 (1 = the paper's online SGD).
        record: the steps at which summaries are recorded: an int n >= 1 means
            :func:`log_steps` ``(steps, n)``; or an explicit strictly increasing tuple of ints in
            ``[0, steps]``. The final step is always recorded (appended if missing).
        seeds: number of independent runs (>= 1). Run j is exactly the run of
            ``model.replace(seed=model.seed + j)``: its own teacher frame (if random), initial
            student and data stream.
        same_init: if True, every run starts from the teacher and initial student of
            ``model.seed`` and only the data stream differs (run j keeps the stream of seed + j):
            the way to measure the SGD noise around one gradient-flow trajectory.
        label_noise: standard deviation of Gaussian label noise added to every y (>= 0).
        block: steps whose samples are drawn at once (an execution detail that does not change the
            data stream; ``None`` picks :func:`auto_block`).
        max_norm_sq: divergence bound on :math:`\|v_k\|^2` (``None``: :math:`10^3` times the
            largest scale of the problem, as for gradient flow).
    """

    model: ModelConfig
    lr: float
    steps: int
    batch: int = 1
    record: int | tuple[int, ...] = 64
    seeds: int = 1
    label_noise: float = 0.0
    block: int | None = None
    same_init: bool = False
    max_norm_sq: float | None = None

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be a companion.config.ModelConfig, got {type(self.model).__name__}")
        lr = require_real("lr", self.lr, low=0.0, low_open=True, why=" (the learning rate must be positive)")
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "steps", require_int("steps", self.steps, 1))
        object.__setattr__(self, "batch", require_int("batch", self.batch, 1))
        object.__setattr__(self, "seeds", require_int("seeds", self.seeds, 1))
        if not isinstance(self.same_init, bool):
            raise ValueError(f"same_init must be True or False, got {self.same_init!r}")
        object.__setattr__(self, "label_noise", require_real("label_noise", self.label_noise, low=0.0))
        object.__setattr__(self, "record", check_record(self.record, self.steps))
        if self.block is not None:
            object.__setattr__(self, "block", require_int("block", self.block, 1))
        if self.max_norm_sq is not None:
            object.__setattr__(
                self, "max_norm_sq", require_real("max_norm_sq", self.max_norm_sq, low=0.0, low_open=True)
            )

    def replace(self, **changes) -> SGDConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def record_steps(self) -> np.ndarray:
        """The record steps as an int64 array (ending at ``steps``)."""
        return record_steps(self.record, self.steps)

    @property
    def block_steps(self) -> int:
        return self.block if self.block is not None else auto_block(self.batch, self.model.d)

    @property
    def horizon(self) -> float:
        """Gradient-flow time reached at the end, :math:`\\eta\\cdot\\text{steps}`."""
        return self.lr * self.steps

    def seed_models(self) -> list[ModelConfig]:
        """The ModelConfig of every run (run j has seed ``model.seed + j``)."""
        return [self.model.replace(seed=self.model.seed + j) for j in range(self.seeds)]


# ----------------------------------------------------------------------------------------------
# State, records, results
# ----------------------------------------------------------------------------------------------


class SGDState(eqx.Module):
    r"""The state of S runs advancing together (a pytree).

    Attributes:
        V: students, shape (S, m, d).
        key: raw key data of each run's data stream, shape (S, 2) uint32 (threefry).
        step: steps taken so far (shared by all runs), int64 scalar.
        diverged_at: per run, the first step at which :math:`\max_k\|v_k\|^2` was non-finite or
            above the bound, or -1; shape (S,), int64.
    """

    V: Array
    key: Array
    step: Array
    diverged_at: Array


@dataclass(frozen=True, eq=False)
class SGDResult:
    r"""Recorded summaries of S runs (NumPy arrays; S is always the leading axis).

    Attributes:
        config: the :class:`SGDConfig` (None for :func:`simulate` without one).
        lr: learning rate.
        steps: record steps, shape (R,), int64.
        overlaps: :math:`\bar v_{k,p}` at the records, shape (S, R, m, P), float32.
        norms_sq: :math:`\|v_k\|^2`, shape (S, R, m), float32.
        loss: closed-form population loss, shape (S, R), float64.
        final_state: V after the last step, shape (S, m, d).
        wall_time: seconds spent stepping (0 when loaded from the cache).
        cached: whether this came from the cache.
    """

    config: SGDConfig | None
    lr: float
    steps: np.ndarray
    overlaps: np.ndarray
    norms_sq: np.ndarray
    loss: np.ndarray
    final_state: np.ndarray
    wall_time: float = 0.0
    cached: bool = False

    @property
    def times(self) -> np.ndarray:
        r"""Record times in gradient-flow units :math:`t = \eta\cdot\text{steps}`, shape (R,), float64."""
        return self.lr * self.steps.astype(np.float64)

    @property
    def seeds(self) -> int:
        return self.overlaps.shape[0]

    def max_overlap_sq(self) -> np.ndarray:
        r""":math:`\max_k \bar v_{k,p}^2` per teacher direction, shape (S, R, P)."""
        return np.max(self.overlaps.astype(np.float64) ** 2, axis=2)

    def escape_times(self, threshold: float = 0.5) -> np.ndarray:
        r"""First recorded gradient-flow time at which :math:`\max_k\bar v_{k,p}^2 \ge` threshold.

        Shape (S, P), ``inf`` where it is never reached. Resolution is the record spacing (no
        interpolation); ``companion.dynamics.crossing_time`` applied to :meth:`max_overlap_sq`
        interpolates.
        """
        above = self.max_overlap_sq() >= threshold
        first = np.argmax(above, axis=1)
        return np.where(np.any(above, axis=1), self.times[first], np.inf)

    def trajectory(self, run: int = 0):
        """Run ``run`` as a :class:`companion.dynamics.Trajectory` (times in gradient-flow units),
        so that the escape-time tools of :mod:`companion.dynamics` apply to SGD unchanged.
        Needs a record at step 0 (the initial overlaps)."""
        from companion.dynamics import Trajectory

        run = require_int("run", run, 0, self.seeds - 1)
        if self.steps[0] != 0:
            raise ValueError("trajectory: the first record must be step 0 (it gives the initial overlaps)")
        return Trajectory(
            times=self.times,
            overlaps=self.overlaps[run],
            norms_sq=self.norms_sq[run],
            loss=self.loss[run],
            initial_overlaps=self.overlaps[run, 0],
            initial_norms_sq=self.norms_sq[run, 0],
            final_state=self.final_state[run],
            steps=int(self.steps[-1]),
            dt=self.lr,
            method="sgd",
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "steps": self.steps,
            "overlaps": self.overlaps,
            "norms_sq": self.norms_sq,
            "loss": self.loss,
            "final_state": self.final_state,
        }


# ----------------------------------------------------------------------------------------------
# The jitted engine
# ----------------------------------------------------------------------------------------------
