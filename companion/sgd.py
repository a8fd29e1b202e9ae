r"""Online SGD for the 2-homogeneous student, fast enough for the paper's sizes.

The student :math:`f(x) = \sum_k \|v_k\|^2\sigma(\langle\bar v_k, x\rangle)` is trained on fresh
Gaussian samples :math:`x\sim N(0, I_d)`, :math:`y = f_*(x) + \text{noise}` (noiseless by default),
with the per-sample loss :math:`\ell = \tfrac12(f(x) - y)^2`. One step draws a minibatch of B fresh
samples (B = 1 is the paper's online SGD) and moves every :math:`v_k` against the mean of the
per-sample gradients; both "layers" move at once because the output weight is :math:`\|v_k\|^2`.

**The gradient in matmul form.** With :math:`r_k = \|v_k\|`, :math:`z_{bk} = \langle\bar v_k, x_b\rangle`
and the residual :math:`e_b = f(x_b) - y_b`, the per-sample gradient (paper brief §4.6)

.. math::
    \nabla_{v_k}\ell = e\,\big[2\,v_k\,\sigma(z_k) + r_k\,\sigma'(z_k)\,(I - \bar v_k\bar v_k^\top)\,x\big]

averaged over the batch is

.. math::
    g_k = (2 s_k - c_k)\, v_k + r_k\, (A^\top X)_k, \qquad
    A_{bk} = \tfrac1B e_b\,\sigma'(z_{bk}),\quad s_k = \tfrac1B\sum_b e_b\,\sigma(z_{bk}),\quad
    c_k = \sum_b A_{bk}\, z_{bk},

using :math:`\bar v_k = v_k / r_k`. A step costs two matrix products, :math:`Z = X V^\top / r`
and :math:`A^\top X` (:math:`4Bmd` FLOPs), one elementwise pass over V, and the teacher's labels
(free for axis-aligned teacher directions, :math:`2BPd` FLOPs otherwise).

**Engine.** Steps run inside ``jax.jit`` + ``lax.scan``, a block of K steps per loop iteration,
with the K minibatches of a block drawn in one call. The sample of step t is drawn from
``fold_in(key, t)``, so the data stream does not depend on the block size, the chunking, or on
resuming from a checkpoint. Only summaries are recorded, at chosen steps: the overlaps
:math:`\bar v_{k,p}` (m × P), the output weights :math:`\|v_k\|^2` (m) and the closed-form
population loss (:func:`companion.loss.population_loss`, evaluated in float64). Time is reported
both in steps and in gradient-flow units :math:`t = \eta\cdot\text{steps}`, the unit in which SGD
tracks gradient flow (one step of SGD moves V by :math:`\eta` times an unbiased estimate of
:math:`-\nabla L`).

Several seeds run together under ``vmap`` (the default on GPUs/TPUs; on a CPU the seeds run one
after the other unless asked, see :func:`simulate`), optionally sharded over several devices.
Long runs are cut into chunks (for a progress bar and checkpoints); :func:`run_sgd` caches
finished results by a hash of the full :class:`SGDConfig` and resumes a crashed run from its last
checkpoint.

**Divergence guard.** Every step checks :math:`\max_k\|v_k\|^2` (computed anyway); the first step
at which it is non-finite or above a bound (default as for gradient flow: :math:`10^3` times the
largest scale of the problem) is remembered, the run stops at the end of its block, and
:class:`SGDDivergenceError` reports the step, the learning rate and a stable range.
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._validate import require_int, require_real
from companion.config import ModelConfig
from companion.dynamics import default_norm_bound
from companion.hermite import Activation
from companion.loss import population_loss
from companion.teacher import Teacher

#: Bump when the engine's arithmetic or random stream changes: it is part of every cache key.
ENGINE_VERSION = "sgd-1"

# ----------------------------------------------------------------------------------------------
# The activation as fused elementwise code
# ----------------------------------------------------------------------------------------------


def _series(activation: Activation, derivative: bool = True) -> Callable:
    r"""``z -> (σ(z), σ'(z))`` (or ``σ(z)`` alone) by the Hermite three-term recurrence.

    Unlike :meth:`Activation.__call__` (a stack of :math:`h_0..h_K` contracted with the
    coefficients), this is a chain of elementwise operations that XLA fuses into neighbouring
    kernels; zero coefficients cost nothing beyond the recurrence itself.
    :math:`h_{k+1} = (z h_k - \sqrt k\, h_{k-1})/\sqrt{k+1}` and :math:`h_{k+1}' = \sqrt{k+1}\,h_k`.
    """
    c = [float(v) for v in activation.coefficients]
    K = len(c) - 1

    def evaluate(z):
        h_prev, h = jnp.ones_like(z), z
        s = c[0] + c[1] * z if K >= 1 else jnp.full_like(z, c[0])
        ds = jnp.full_like(z, c[1]) if K >= 1 else jnp.zeros_like(z)
        for k in range(1, K):
            h_prev, h = h, (z * h - math.sqrt(k) * h_prev) * (1.0 / math.sqrt(k + 1))
            if c[k + 1] != 0.0:
                s = s + c[k + 1] * h
                if derivative:
                    ds = ds + (c[k + 1] * math.sqrt(k + 1)) * h_prev
        return (s, ds) if derivative else s

    return evaluate


def _teacher_labels(teacher: Teacher, x, axes: bool):
    r""":math:`f_*(x)` for a batch (..., d); ``axes`` uses :math:`v_p^* = e_p` (no matmul)."""
    proj = x[..., : teacher.P] if axes else x @ teacher.directions.T
    return _series(teacher.activation, derivative=False)(proj) @ teacher.coefficients


# ----------------------------------------------------------------------------------------------
# Per-sample loss and its analytic gradient
# ----------------------------------------------------------------------------------------------


def minibatch_loss(V: Float[Array, "m d"], x: Float[Array, "B d"], y: Float[Array, " B"], activation: Activation):
    r"""Mean per-sample loss :math:`\frac1B\sum_b \tfrac12(f(x_b) - y_b)^2` (for ``jax.grad``)."""
    r2 = jnp.sum(V * V, axis=-1)
    unit = V / jnp.sqrt(jnp.maximum(r2, jnp.finfo(V.dtype).tiny))[:, None]
    f = _series(activation, derivative=False)(x @ unit.T) @ r2
    return 0.5 * jnp.mean((f - y) ** 2)


def _gradient_terms(V, x, y, activation: Activation):
    """(coefficient on V, r, G = A^T X, r2): the gradient is coef[:, None] * V + r[:, None] * G."""
    B = x.shape[0]
    r2 = jnp.sum(V * V, axis=-1)
    r = jnp.sqrt(jnp.maximum(r2, jnp.finfo(V.dtype).tiny))
    z = (x @ V.T) / r  # (B, m): <v̄_k, x_b>
    s, ds = _series(activation)(z)
    e = s @ r2 - y  # residuals f(x_b) - y_b
    A = e[:, None] * ds * (1.0 / B)
    c = jnp.sum(A * z, axis=0)
    s_mean = (e @ s) * (1.0 / B)
    G = A.T @ x  # (m, d)
    return 2.0 * s_mean - c, r, G, r2


def minibatch_gradient(V: Float[Array, "m d"], x: Float[Array, "B d"], y: Float[Array, " B"], activation: Activation):
    r"""Analytic mean per-sample gradient :math:`\frac1B\sum_b\nabla_V\tfrac12(f(x_b)-y_b)^2`, shape (m, d).

    In matmul form: :math:`g_k = (2 s_k - c_k) v_k + r_k (A^\top X)_k` (module docstring). Equals
    ``jax.grad(minibatch_loss)`` (tested to round-off in float64); a zero row gets a zero gradient.
    """
    coef, r, G, _ = _gradient_terms(V, x, y, activation)
    return coef[:, None] * V + r[:, None] * G


def _sgd_update(V, x, y, lr, activation: Activation):
    """One SGD step (fused form of V - lr * minibatch_gradient), and max ||v_k||^2 before it."""
    coef, r, G, r2 = _gradient_terms(V, x, y, activation)
    return (1.0 - lr * coef)[:, None] * V - (lr * r)[:, None] * G, jnp.max(r2)


def sgd_step(V: Float[Array, "m d"], x: Float[Array, "B d"], y: Float[Array, " B"], lr, activation: Activation):
    r"""One plain SGD step :math:`V \leftarrow V - \eta\,g` on the minibatch (x, y)."""
    return _sgd_update(V, x, y, lr, activation)[0]


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


def log_steps(steps: int, num: int = 64, first: int = 1) -> tuple[int, ...]:
    r"""Record steps: 0, then about ``num`` integers log-spaced from ``first`` to ``steps``.

    Duplicates left by rounding at the start are dropped, so fewer than ``num + 1`` values may come
    back; ``steps`` is always the last one.
    """
    steps = require_int("steps", steps, 1)
    num = require_int("num", num, 1)
    first = require_int("first", first, 1, steps)
    grid = np.unique(np.round(np.geomspace(first, steps, num)).astype(np.int64))
    return (0, *(int(s) for s in grid if s > 0))


def _auto_block(batch: int, d: int) -> int:
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
            data stream; ``None`` picks :func:`_auto_block`).
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
        require_int("steps", self.steps, 1)
        require_int("batch", self.batch, 1)
        require_int("seeds", self.seeds, 1)
        if not isinstance(self.same_init, bool):
            raise ValueError(f"same_init must be True or False, got {self.same_init!r}")
        object.__setattr__(self, "label_noise", require_real("label_noise", self.label_noise, low=0.0))
        if isinstance(self.record, (list, tuple, np.ndarray)):
            record = tuple(int(require_int("record entries", s, 0, self.steps)) for s in self.record)
            if not record:
                raise ValueError("record must hold at least one step")
            if any(b <= a for a, b in zip(record, record[1:])):
                raise ValueError(f"record must be strictly increasing steps in [0, steps = {self.steps}], got {record}")
            object.__setattr__(self, "record", record)
        else:
            require_int("record", self.record, 1, why=" (the number of log-spaced record steps)")
        if self.block is not None:
            require_int("block", self.block, 1)
        if self.max_norm_sq is not None:
            object.__setattr__(self, "max_norm_sq", require_real("max_norm_sq", self.max_norm_sq, low=0.0, low_open=True))

    def replace(self, **changes) -> "SGDConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def record_steps(self) -> np.ndarray:
        """The record steps as an int64 array (ending at ``steps``)."""
        steps = self.record if isinstance(self.record, tuple) else log_steps(self.steps, self.record)
        if steps[-1] != self.steps:  # the run always goes to `steps`, and records there
            steps = (*steps, self.steps)
        return np.asarray(steps, dtype=np.int64)

    @property
    def block_steps(self) -> int:
        return self.block if self.block is not None else _auto_block(self.batch, self.model.d)

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


class SGDDivergenceError(FloatingPointError):
    """SGD diverged (non-finite or exploding norms). The message says where and what to do.

    Attributes:
        step: first step (over all seeds) at which the norm bound was broken.
        lr: the learning rate.
        seeds: indices of the runs that diverged.
        partial: the :class:`SGDResult` recorded before the divergence (or None).
    """

    def __init__(self, message: str, step: int, lr: float, seeds, partial=None):
        super().__init__(message)
        self.step, self.lr, self.seeds, self.partial = step, lr, list(seeds), partial


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
            times=self.times, overlaps=self.overlaps[run], norms_sq=self.norms_sq[run], loss=self.loss[run],
            initial_overlaps=self.overlaps[run, 0], initial_norms_sq=self.norms_sq[run, 0],
            final_state=self.final_state[run], steps=int(self.steps[-1]), dt=self.lr, method="sgd",
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "steps": self.steps, "overlaps": self.overlaps, "norms_sq": self.norms_sq,
            "loss": self.loss, "final_state": self.final_state,
        }


# ----------------------------------------------------------------------------------------------
# The jitted engine
# ----------------------------------------------------------------------------------------------


def _rotl(v, r: int):
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def _threefry2x32(k1, k2, x0, x1):
    """The Threefry-2x32 hash (20 rounds), written out so that XLA fuses it into one loop.

    JAX lowers its own ``threefry2x32`` on CPU as a rolled 5-iteration loop whose state is
    materialized between iterations; the unrolled form produces the same bits faster.
    """
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x = [x0 + ks[0], x1 + ks[1]]
    for i in range(5):
        for r in rotations[i % 2]:
            x[0] = x[0] + x[1]
            x[1] = x[0] ^ _rotl(x[1], r)
        x[0] = x[0] + ks[(i + 1) % 3]
        x[1] = x[1] + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x


def _normal(key, shape, dtype):
    r"""``jax.random.normal(key, shape, dtype)``, bit for bit, faster on CPU for float32.

    For a threefry key with ``jax_threefry_partitionable`` (set by ``companion``) and float32, it
    reproduces JAX's algorithm (counter-mode threefry over the flat index, 23 mantissa bits ->
    uniform on (-1, 1), :math:`\sqrt2\,\mathrm{erf}^{-1}`) with the hash unrolled: 1.3-2.4x faster
    on 2 CPU cores. Anything else falls back to ``jax.random.normal``. Equality with
    ``jax.random.normal`` is tested, so a JAX release that changes its stream is caught.
    """
    n = math.prod(shape)
    if (
        jnp.dtype(dtype) != jnp.float32
        or not jax.config.jax_threefry_partitionable
        or str(jax.random.key_impl(key)) != "threefry2x32"
        or n >= 2**32
    ):
        return jax.random.normal(key, shape, dtype)
    kd = jax.random.key_data(key)
    counts = jax.lax.iota(jnp.uint32, n).reshape(shape)
    b1, b2 = _threefry2x32(kd[0], kd[1], jnp.zeros(shape, jnp.uint32), counts)
    mantissa = ((b1 ^ b2) >> np.uint32(9)) | np.uint32(0x3F800000)  # a float in [1, 2)
    f = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    lo, hi = np.nextafter(np.float32(-1.0), np.float32(0.0)), np.float32(1.0)
    u = jnp.maximum(lo, f * (hi - lo) + lo)
    return np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)


def _step_key(key, t):
    """Key of step t (int64): fold in the high and low 32-bit halves."""
    t = t.astype(jnp.int64)
    hi = (t >> 32).astype(jnp.uint32)
    lo = (t & 0xFFFFFFFF).astype(jnp.uint32)
    return jax.random.fold_in(jax.random.fold_in(key, hi), lo)


def _draw(key, t, batch: int, d: int, dtype, noise: float, teacher: Teacher, axes: bool):
    """Minibatch (x, y) of step t."""
    k = _step_key(key, t)
    x = _normal(k, (batch, d), dtype)
    y = _teacher_labels(teacher, x, axes)
    if noise > 0.0:
        y = y + noise * jax.random.normal(jax.random.fold_in(k, 1), (batch,), dtype)
    return x, y


def _advance_one(V, key_data, bad, teacher, lr, t0, n, *, batch, block, axes, bound, noise, unroll):
    """Advance one run by n steps from step t0 (n, t0 dynamic). Returns (V, diverged_at)."""
    key = jax.random.wrap_key_data(key_data)
    d, dtype = V.shape[1], V.dtype
    lr = lr.astype(dtype)
    activation = teacher.activation

    def one(V, bad, t, x, y):
        V_new, w_max = _sgd_update(V, x, y, lr, activation)
        # NaN compares False, so a NaN norm counts as broken too.
        bad = jnp.where((bad < 0) & ~(w_max <= bound), t, bad)
        return V_new, bad

    def single(i, carry):  # one step with its own draw (for the unaligned head and tail)
        V, bad = carry
        t = t0 + i
        x, y = _draw(key, t, batch, d, dtype, noise, teacher, axes)
        return one(V, bad, t, x, y)

    # Head: steps until t is a multiple of the block, so that block boundaries (and hence the
    # compiled arithmetic of every step) do not depend on how the run is chunked.
    head = jnp.minimum(n, (-t0) % block)
    V, bad = jax.lax.fori_loop(0, head, single, (V, bad))
    t1 = t0 + head
    nfull = (n - head) // block

    def full_block(carry):
        i, V, bad = carry
        tb = t1 + i * block
        ts = tb + jnp.arange(block, dtype=jnp.int64)
        xs, ys = jax.vmap(lambda t: _draw(key, t, batch, d, dtype, noise, teacher, axes))(ts)

        def body(c, inp):
            V, bad = c
            t, x, y = inp
            return one(V, bad, t, x, y), None

        (V, bad), _ = jax.lax.scan(body, (V, bad), (ts, xs, ys), unroll=unroll)
        return i + 1, V, bad

    # Stop at the end of the block in which the run diverged: no silent NaN steps.
    _, V, bad = jax.lax.while_loop(lambda c: (c[0] < nfull) & (c[2] < 0), full_block, (jnp.zeros((), jnp.int64), V, bad))
    t2 = t1 + nfull * block
    tail = jnp.where(bad < 0, n - head - nfull * block, 0)
    V, bad = jax.lax.fori_loop(0, tail, lambda i, c: single(i + (t2 - t0), c), (V, bad))
    return V, bad


@partial(jax.jit, static_argnames=("batch", "block", "axes", "bound", "noise", "unroll", "teacher_batched", "vectorize"))
def _advance(state: SGDState, teacher: Teacher, lr, n, *, batch, block, axes, bound, noise, unroll, teacher_batched, vectorize):
    """Advance all runs by n steps (n dynamic: no recompilation for other lengths)."""
    n = jnp.asarray(n, jnp.int64)
    fn = partial(_advance_one, batch=batch, block=block, axes=axes, bound=bound, noise=noise, unroll=unroll)
    if vectorize:
        V, bad = jax.vmap(fn, in_axes=(0, 0, 0, 0 if teacher_batched else None, None, None, None))(
            state.V, state.key, state.diverged_at, teacher, lr, state.step, n
        )
    else:  # one run after the other inside one dispatch
        def run(j, carry):
            V_all, bad_all = carry
            tj = jax.tree.map(lambda a: a[j], teacher) if teacher_batched else teacher
            Vj, bj = fn(V_all[j], state.key[j], bad_all[j], tj, lr, state.step, n)
            return V_all.at[j].set(Vj), bad_all.at[j].set(bj)

        V, bad = jax.lax.fori_loop(0, state.V.shape[0], run, (state.V, state.diverged_at))
    return SGDState(V, state.key, state.step + n, bad)


@partial(jax.jit, static_argnames=("teacher_batched",))
def _measure(V, teacher: Teacher, teacher_batched):
    """Overlaps (S, m, P), norms^2 (S, m), float64 population loss (S,)."""

    def one(V, teacher):
        r2 = jnp.sum(V * V, axis=-1)
        unit = V / jnp.sqrt(jnp.maximum(r2, jnp.finfo(V.dtype).tiny))[:, None]
        overlaps = unit @ teacher.directions.T
        t64 = jax.tree.map(lambda a: a.astype(jnp.float64), teacher)
        return overlaps, r2, population_loss(V.astype(jnp.float64), t64)

    return jax.vmap(one, in_axes=(0, 0 if teacher_batched else None))(V, teacher)


def _is_axes(teacher: Teacher) -> bool:
    W = np.asarray(teacher.directions)
    return W.ndim == 2 and np.array_equal(W, np.eye(*W.shape, dtype=W.dtype))


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _default_vectorize(m: int, d: int, batch: int) -> bool:
    """vmap over runs on accelerators; on a CPU only for tiny models, where per-step overhead
    dominates (measured on 2 cores, B = 1: 1.8x at d = 64, 1.3x at d = 128, 0.74x at d = 256)."""
    return jax.default_backend() != "cpu" or m * d * batch <= (1 << 13)


def simulate(
    teacher: Teacher | Sequence[Teacher],
    V0,
    key,
    lr: float,
    record_steps,
    batch: int = 1,
    label_noise: float = 0.0,
    block: int | None = None,
    max_norm_sq: float | None = None,
    vectorize: bool | None = None,
    devices=None,
    progress: bool = False,
    chunk_seconds: float = 2.0,
    checkpoint: Callable[[SGDState, dict], None] | None = None,
    checkpoint_seconds: float = 60.0,
    resume: tuple[SGDState, dict] | None = None,
    config: SGDConfig | None = None,
) -> SGDResult:
    r"""Run online SGD from ``V0`` and record summaries at ``record_steps``.

    Args:
        teacher: one teacher shared by all runs, or one per run.
        V0: initial students, shape (m, d) or (S, m, d).
        key: PRNG key(s) of the data stream: one key, or S keys (a typed key array of shape (S,)).
            With one key and S > 1 runs, run j uses ``fold_in(key, j)``.
        lr: learning rate (> 0).
        record_steps: strictly increasing ints >= 0; the run stops at the last one.
        batch: fresh samples per step.
        label_noise: std of Gaussian label noise.
        block: steps drawn per block (default :func:`_auto_block`).
        max_norm_sq: divergence bound (default :func:`default_norm_bound`).
        vectorize: ``vmap`` the runs (default: on GPU/TPU yes; on a CPU only for tiny models,
            where it was measured to pay, see :func:`_default_vectorize`).
        devices: shard the runs over these devices (the number of runs must be a multiple of
            their number); default: no sharding.
        progress: show a tqdm progress bar.
        chunk_seconds: target wall time of one dispatch (progress and checkpoint granularity).
        checkpoint: called as ``checkpoint(state, records)`` at most every ``checkpoint_seconds``
            on chunk boundaries.
        resume: ``(state, records)`` from a checkpoint to continue from.
        config: stored in the result.
    Raises:
        SGDDivergenceError: the norms became non-finite or exceeded the bound.
    """
    lr = require_real("lr", lr, low=0.0, low_open=True)
    batch = require_int("batch", batch, 1)
    label_noise = require_real("label_noise", label_noise, low=0.0)
    record_steps = np.asarray(record_steps, dtype=np.int64).reshape(-1)
    if record_steps.size == 0 or record_steps[0] < 0 or np.any(np.diff(record_steps) <= 0):
        raise ValueError(f"record_steps must be strictly increasing ints >= 0, got {record_steps.tolist()}")
    V0 = jnp.asarray(V0)
    if V0.ndim == 2:
        V0 = V0[None]
    if V0.ndim != 3:
        raise ValueError(f"V0 must have shape (m, d) or (S, m, d), got {V0.shape}")
    S, m, d = V0.shape
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if len(teachers) not in (1, S):
        raise ValueError(f"teacher: give one teacher or one per run ({S}), got {len(teachers)}")
    if any(t.d != d for t in teachers):
        raise ValueError(f"teacher dimension {teachers[0].d} does not match V0's d = {d}")
    activation = teachers[0].activation
    if any(t.activation != activation for t in teachers):
        raise ValueError("teacher: all runs must share one activation")
    axes = all(_is_axes(t) for t in teachers)
    shared = len(teachers) == 1 or all(
        all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(teachers[0]), jax.tree.leaves(t)))
        for t in teachers[1:]
    )
    teacher_tree = teachers[0] if shared else _stack(teachers)
    teacher_tree = jax.tree.map(lambda a: a.astype(V0.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, teacher_tree)
    keys = key if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else None
    if keys is None:
        raise ValueError("key must be a typed PRNG key (jax.random.key(...)) or an array of S of them")
    if keys.ndim == 0:
        keys = jax.vmap(lambda j: jax.random.fold_in(keys, j))(jnp.arange(S)) if S > 1 else keys[None]
    if keys.shape != (S,):
        raise ValueError(f"key: give one key or S = {S} keys, got shape {keys.shape}")
    block = _auto_block(batch, d) if block is None else require_int("block", block, 1)
    bound = float(max_norm_sq) if max_norm_sq is not None else max(default_norm_bound(V0, t) for t in teachers)
    vectorize = _default_vectorize(m, d, batch) if vectorize is None else bool(vectorize)
    if devices is not None:
        vectorize = True  # sharding splits the vmapped run axis
    unroll = 4 if m * d <= (1 << 15) and batch == 1 else 1
    static = dict(batch=batch, block=block, axes=axes, bound=bound, noise=label_noise, unroll=unroll,
                  teacher_batched=not shared, vectorize=vectorize)

    if resume is not None:
        state, records = resume
        state = jax.tree.map(jnp.asarray, state)
        records = {k: list(v) for k, v in records.items()}
    else:
        state = SGDState(V0, jax.random.key_data(keys), jnp.zeros((), jnp.int64), jnp.full((S,), -1, jnp.int64))
        records = {"steps": [], "overlaps": [], "norms_sq": [], "loss": []}
    if devices is not None:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        devices = list(devices)
        if S % len(devices):
            raise ValueError(f"devices: the {S} runs must split evenly over {len(devices)} devices")
        mesh = Mesh(np.asarray(devices), ("runs",))
        spread = NamedSharding(mesh, PartitionSpec("runs"))
        replicated = NamedSharding(mesh, PartitionSpec())
        state = SGDState(jax.device_put(state.V, spread), jax.device_put(state.key, spread),
                         jax.device_put(state.step, replicated), jax.device_put(state.diverged_at, spread))
        teacher_tree = jax.device_put(teacher_tree, spread if not shared else replicated)

    lr_arr = jnp.asarray(lr, jnp.float64)
    done_records = len(records["steps"])
    total = int(record_steps[-1])
    start_step = int(state.step)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, unit="step", unit_scale=True, dynamic_ncols=True,
                   desc=f"SGD d={d} m={m} B={batch} x{S}")
    wall = 0.0
    chunk = block * 4  # steps per dispatch, adapted to ~chunk_seconds (a multiple of the block)
    last_checkpoint = _time.perf_counter()

    def record(state):
        overlaps, r2, loss = _measure(state.V, teacher_tree, not shared)
        records["steps"].append(int(state.step))
        records["overlaps"].append(np.asarray(overlaps, dtype=np.float32))
        records["norms_sq"].append(np.asarray(r2, dtype=np.float32))
        records["loss"].append(np.asarray(loss, dtype=np.float64))

    def check(state, records):
        bad = np.asarray(state.diverged_at)
        loss_bad = records["loss"] and not np.all(np.isfinite(records["loss"][-1]))
        if np.any(bad >= 0) or loss_bad:
            first = int(bad[bad >= 0].min()) if np.any(bad >= 0) else int(state.step)
            partial_result = _result(records, state, lr, config, wall) if records["steps"] else None
            edge = stability_edge(d, batch)
            raise SGDDivergenceError(
                f"SGD diverged at step {first} (gradient-flow time t = {lr * first:.4g}) with lr = {lr:.4g}, "
                f"batch = {batch}, d = {d}: max ||v_k||^2 became non-finite or exceeded {bound:.3g} "
                f"in run(s) {np.flatnonzero(bad >= 0).tolist() or 'all'}. "
                f"The measured stability edge at this size is about lr = {edge:.3g} "
                f"(stability_edge(d={d}, batch={batch})); use lr <= {0.5 * edge:.3g} (half the edge), "
                f"or a larger batch (the edge grows about linearly with it).",
                first, lr, np.flatnonzero(bad >= 0), partial_result,
            )

    try:
        for target in record_steps[done_records:]:
            target = int(target)
            while int(state.step) < target:
                now = int(state.step)
                # chunk ends on a block multiple (or the record step): chunking never changes values
                stop = min(target, now + (-now) % block + chunk)
                tic = _time.perf_counter()
                state = _advance(state, teacher_tree, lr_arr, stop - now, **static)
                jax.block_until_ready(state.V)
                elapsed = _time.perf_counter() - tic
                wall += elapsed
                check(state, records)
                if bar is not None:
                    bar.update(stop - now)
                if elapsed < 0.5 * chunk_seconds and chunk < (1 << 40):
                    chunk *= 2
                elif elapsed > 2 * chunk_seconds and chunk > block:
                    chunk = max(block, (chunk // 2) // block * block)
                if checkpoint is not None and _time.perf_counter() - last_checkpoint > checkpoint_seconds and int(state.step) < total:
                    checkpoint(state, records)
                    last_checkpoint = _time.perf_counter()
            record(state)
            check(state, records)
    finally:
        if bar is not None:
            bar.close()
    return _result(records, state, lr, config, wall)


def _result(records, state, lr, config, wall) -> SGDResult:
    return SGDResult(
        config=config,
        lr=lr,
        steps=np.asarray(records["steps"], dtype=np.int64),
        overlaps=np.stack(records["overlaps"], axis=1),
        norms_sq=np.stack(records["norms_sq"], axis=1),
        loss=np.stack(records["loss"], axis=1),
        final_state=np.asarray(state.V),
        wall_time=wall,
    )


# ----------------------------------------------------------------------------------------------
# The cached, checkpointed entry point
# ----------------------------------------------------------------------------------------------


def build(config: SGDConfig):
    """``(teachers, V0 (S, m, d), keys (S,))`` of every run of the configuration."""
    teachers, students, keys = [], [], []
    for model in config.seed_models():
        teacher, V0 = (config.model if config.same_init else model).build()
        teachers.append(teacher)
        students.append(V0)
        keys.append(model.keys()["data"])
    return teachers, jnp.stack(students), jnp.stack(keys)


def run_sgd(
    config: SGDConfig,
    cache=True,
    progress: bool = False,
    vectorize: bool | None = None,
    devices=None,
    checkpoint_seconds: float = 60.0,
    chunk_seconds: float = 2.0,
) -> SGDResult:
    r"""Run (or load) the SGD experiment ``config``.

    Args:
        config: the experiment.
        cache: ``True`` (the default cache folder, see :mod:`companion.cache`), a folder path, a
            :class:`companion.cache.Cache`, or ``False``/``None`` for no caching. A finished run
            is stored atomically under a hash of the full configuration and loaded instantly next
            time; an unfinished one is checkpointed every ``checkpoint_seconds`` and resumed.
        progress: show a progress bar.
        vectorize, devices, chunk_seconds: passed to :func:`simulate` (they do not change the
            result beyond float rounding, so they are not part of the cache key).
    """
    from companion.cache import Cache

    if not isinstance(config, SGDConfig):
        raise ValueError(f"config must be an SGDConfig, got {type(config).__name__}")
    store = Cache.resolve(cache, namespace="sgd", version=ENGINE_VERSION)

    if store is not None:
        hit = store.load(config)
        if hit is not None:
            arrays, meta = hit
            return SGDResult(config, config.lr, arrays["steps"], arrays["overlaps"], arrays["norms_sq"],
                             arrays["loss"], arrays["final_state"], float(meta.get("wall_time", 0.0)), cached=True)

    teachers, V0, keys = build(config)
    resume = None
    checkpoint = None
    if store is not None:
        part = store.load(config, tag="partial")
        if part is not None:
            arrays, _ = part
            R = arrays["steps"].size
            records = {
                "steps": [int(s) for s in arrays["steps"]],
                "overlaps": [arrays["overlaps"][:, i] for i in range(R)],
                "norms_sq": [arrays["norms_sq"][:, i] for i in range(R)],
                "loss": [arrays["loss"][:, i] for i in range(R)],
            }
            state = SGDState(jnp.asarray(arrays["V"]), jnp.asarray(arrays["key"]), jnp.asarray(arrays["step"]),
                             jnp.asarray(arrays["diverged_at"]))
            resume = (state, records)

        def checkpoint(state, records):
            S, m, P = V0.shape[0], config.model.m, config.model.P
            R = len(records["steps"])
            store.save(config, {
                "V": np.asarray(state.V), "key": np.asarray(state.key), "step": np.asarray(state.step),
                "diverged_at": np.asarray(state.diverged_at),
                "steps": np.asarray(records["steps"], dtype=np.int64),
                "overlaps": np.stack(records["overlaps"], 1) if R else np.zeros((S, 0, m, P), np.float32),
                "norms_sq": np.stack(records["norms_sq"], 1) if R else np.zeros((S, 0, m), np.float32),
                "loss": np.stack(records["loss"], 1) if R else np.zeros((S, 0), np.float64),
            }, {"step": int(state.step)}, tag="partial")

    result = simulate(
        teachers, V0, keys, config.lr, config.record_steps, batch=config.batch, label_noise=config.label_noise,
        block=config.block_steps, max_norm_sq=config.max_norm_sq, vectorize=vectorize, devices=devices,
        progress=progress, chunk_seconds=chunk_seconds, checkpoint=checkpoint,
        checkpoint_seconds=checkpoint_seconds, resume=resume, config=config,
    )
    if store is not None:
        store.save(config, result.arrays(), {"wall_time": result.wall_time})
        store.remove(config, tag="partial")
    return result


# ----------------------------------------------------------------------------------------------
# Learning rates
# ----------------------------------------------------------------------------------------------

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


def theory_lr(model: ModelConfig, delta: float = 0.1, p_star: int | None = None, c: float | None = None,
              batch: int = 1) -> float:
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
    steps = max(1, int(math.ceil(horizon / lr)))
    config = SGDConfig(model, lr=lr, steps=steps, batch=batch, record=(steps,), seeds=seeds)
    teachers, V0, keys = build(config)
    try:
        simulate(teachers, V0, keys, lr, (steps,), batch=batch, block=config.block_steps, chunk_seconds=5.0)
    except SGDDivergenceError as err:
        return lr * err.step
    return math.inf


def find_stability_edge(
    model: ModelConfig, batch: int = 1, horizon: float = 50.0, factor: float = math.sqrt(2.0),
    guess: float | None = None, seeds: int = 1, log: Callable[[str], None] | None = None,
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
            log(f"d={model.d} m={model.m} P={model.P} B={batch} lr={rate:.4g}: " + ("stable" if math.isinf(t) else f"diverged at t={t:.3g}"))
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
