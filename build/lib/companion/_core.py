r"""The training core every engine shares: data draw, record steps, summaries, a guarded driver.

* :func:`draw` — the minibatch of step t: :math:`x\sim N(0, I_d)` from
  :func:`companion._prng.step_key` ``(key, t)`` (fast sampler, bit-identical to
  ``jax.random.normal``), labels :math:`y = f_*(x)` plus optional Gaussian label noise. The SGD
  engine (:mod:`companion.sgd`), the optax trainer (:mod:`companion.optim`) and layer-wise phase
  one (:mod:`companion.layerwise`) all draw here, so the same key gives the same data.
* :func:`log_steps`, :func:`record_steps`, :func:`check_record` — record steps (always ending at
  the final step); :func:`interval_steps` — Euler steps per record interval of a flow.
* :func:`summary` — what a record keeps: overlaps, norms², closed-form population loss.
* :func:`drive` — advance a run from record to record in chunks of adaptive length, checking for
  divergence after every chunk and calling a checkpoint hook.
* :func:`cast_teacher`, :func:`is_axes`, :func:`check_times`, :func:`check_state` — small shared checks.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from companion._prng import normal, step_key
from companion._validate import require_finite_array, require_int
from companion.loss import population_loss, teacher_labels
from companion.student import norms_sq, overlaps
from companion.teacher import Teacher

# ----------------------------------------------------------------------------------------------
# Teachers, states, times
# ----------------------------------------------------------------------------------------------


def cast_teacher(teacher: Teacher, dtype) -> Teacher:
    """The teacher with its floating arrays in ``dtype`` (a float64 state is not rounded through float32)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, teacher)


def is_axes(teacher: Teacher) -> bool:
    """Whether the teacher directions are exactly :math:`e_1..e_P` (then labels need no matmul)."""
    W = np.asarray(teacher.directions)
    return bool(W.ndim == 2 and np.array_equal(W, np.eye(*W.shape, dtype=W.dtype)))


def check_times(times) -> np.ndarray:
    """Record times of a flow: a non-empty, strictly increasing float64 array >= 0 ending > 0."""
    times = require_finite_array("times", np.asarray(times, dtype=np.float64))
    if times.ndim != 1 or times.size < 1:
        raise ValueError(f"times must be a non-empty 1-D array of record times, got shape {times.shape}")
    if times[0] < 0:
        raise ValueError(f"times must be >= 0 (the flow starts at t = 0), got times[0] = {times[0]}")
    if np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0))
        raise ValueError(
            f"times must be strictly increasing, but times[{bad}] = {times[bad]} >= times[{bad + 1}] = {times[bad + 1]}"
        )
    if times[-1] <= 0:
        raise ValueError(f"times: the horizon times[-1] must be > 0, got {times[-1]}")
    return times


def check_state(V0, teacher: Teacher):
    """A finite floating state of shape (m, d) matching the teacher's d, as a JAX array."""
    V0 = jnp.asarray(V0)
    if V0.ndim != 2 or V0.shape[1] != teacher.d:
        raise ValueError(f"V0 must have shape (m, d) with d = {teacher.d}, got {V0.shape}")
    if not jnp.issubdtype(V0.dtype, jnp.floating):
        raise ValueError(f"V0 must be a floating-point array, got dtype {V0.dtype}")
    require_finite_array("V0", np.asarray(V0))
    return V0


def interval_steps(times: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Steps per record interval and their size, so that every record lands exactly on its time.

    The interval :math:`[t_{j-1}, t_j]` (:math:`t_{-1} = 0`) gets :math:`n_j = \lceil (t_j -
    t_{j-1})/dt\rceil` steps of size :math:`(t_j - t_{j-1})/n_j \le dt`; the 1e-9 slack keeps an
    interval that is a multiple of dt up to round-off from gaining a step. Returns
    ``(counts (R,) int64, sizes (R,) float64)``.
    """
    widths = np.diff(np.concatenate([[0.0], times]))
    counts = np.ceil(widths / dt - 1e-9).astype(np.int64)
    counts[widths > 0] = np.maximum(counts[widths > 0], 1)
    return counts, np.where(counts > 0, widths / np.maximum(counts, 1), 0.0)


def require_float64(what: str) -> None:
    """Raise a clear error if 64-bit types are off (JAX would silently compute in float32)."""
    if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        raise RuntimeError(
            f"{what} computes in float64, but 64-bit types are off: call companion.enable_float64() first"
        )


def counter_dtype():
    """Step counters: int64 when 64-bit types are enabled, else int32 (runs < 2**31 steps)."""
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32  # type: ignore[attr-defined]


def record_dtype(dtype):
    """Dtype of the recorded loss: float64 when 64-bit types are enabled, else the state's ``dtype``."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.dtype(dtype)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# Record steps
# ----------------------------------------------------------------------------------------------


def log_steps(steps: int, num: int = 64, first: int = 1) -> tuple[int, ...]:
    r"""Record steps: 0, then about ``num`` integers log-spaced from ``first`` to ``steps``.

    Duplicates left by rounding at the start are dropped, so fewer than ``num + 1`` values may come
    back; ``steps`` is always the last one (also for ``num = 1``).
    """
    steps = require_int("steps", steps, 1)
    num = require_int("num", num, 1)
    first = require_int("first", first, 1, steps)
    grid = np.unique(np.round(np.geomspace(first, steps, num)).astype(np.int64)) if num > 1 else np.asarray([steps])
    return (0, *(int(s) for s in grid if s > 0))


def check_record(record, steps: int):
    """Validate a config's ``record``: an int n >= 1 (log-spaced) or strictly increasing steps in [0, steps]."""
    if isinstance(record, (list, tuple, np.ndarray)):
        record = tuple(require_int("record entries", s, 0, steps) for s in record)
        if not record or any(b <= a for a, b in zip(record, record[1:], strict=False)):
            raise ValueError(f"record must be strictly increasing steps in [0, steps = {steps}], got {record}")
        return record
    return require_int("record", record, 1, why=" (the number of log-spaced record steps)")


def record_steps(record, steps: int) -> np.ndarray:
    """The record steps of a config as int64, always ending at ``steps`` (appended if missing)."""
    out = record if isinstance(record, tuple) else log_steps(steps, record)
    if out[-1] != steps:
        out = (*out, steps)
    return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Data and summaries
# ----------------------------------------------------------------------------------------------


def draw(key, t, batch: int, d: int, dtype, noise, teacher: Teacher, axes: bool, noisy: bool | None = None):
    r"""Minibatch ``(x (batch, d), y (batch,))`` of step t (jit-compatible; ``noise`` may be traced).

    :math:`x` comes from :func:`companion._prng.normal` with key ``step_key(key, t)``; the label
    noise :math:`N(0, \text{noise}^2)` from that key folded once more with 1, drawn only if
    ``noisy`` (default: ``noise > 0``, which needs a concrete ``noise``).
    """
    k = step_key(key, t)
    x = normal(k, (batch, d), dtype)
    y = teacher_labels(teacher, x, axes)
    if noisy if noisy is not None else noise > 0.0:
        y = y + jnp.asarray(noise, dtype) * jax.random.normal(jax.random.fold_in(k, 1), (batch,), dtype)
    return x, y


def summary(V, teacher: Teacher, loss_dtype=None):
    r"""What a record keeps of a state: overlaps :math:`\bar v_{k,p}` (m, P), :math:`\|v_k\|^2` (m,)
    and the closed-form population loss (), the loss evaluated in ``loss_dtype`` (default V's)."""
    loss_dtype = V.dtype if loss_dtype is None else loss_dtype
    loss = population_loss(V.astype(loss_dtype), cast_teacher(teacher, loss_dtype))
    return overlaps(V, teacher), norms_sq(V), loss


# ----------------------------------------------------------------------------------------------
# The guarded, chunked driver
# ----------------------------------------------------------------------------------------------


def drive(
    state: Any,
    targets,
    *,
    step_of: Callable[[Any], int],
    advance: Callable[[Any, int], Any],
    record: Callable[[Any], None],
    check: Callable[[Any, float], None],
    block: int = 1,
    chunk_seconds: float = 2.0,
    bar=None,
    checkpoint: Callable[[Any], None] | None = None,
    checkpoint_seconds: float = 60.0,
) -> tuple[Any, float]:
    """Advance ``state`` to every record step in ``targets`` and record there.

    Between records the run advances in chunks (``advance(state, n)``, one dispatch each) that end
    on multiples of ``block`` (so chunking never changes values) and whose length adapts to about
    ``chunk_seconds`` of wall time. After every chunk and every record ``check(state, wall)`` runs
    (it raises on divergence); ``checkpoint(state)`` is called at most every
    ``checkpoint_seconds`` on chunk boundaries before the end. Returns ``(state, wall seconds
    spent advancing)``.
    """
    wall = 0.0
    chunk = block * 4
    total = int(targets[-1]) if len(targets) else step_of(state)
    last_checkpoint = _time.perf_counter()
    for target in targets:
        target = int(target)
        while step_of(state) < target:
            now = step_of(state)
            stop = min(target, now + (-now) % block + chunk)
            tic = _time.perf_counter()
            state = advance(state, stop - now)
            jax.block_until_ready(state)
            elapsed = _time.perf_counter() - tic
            wall += elapsed
            check(state, wall)
            if bar is not None:
                bar.update(stop - now)
            if elapsed < 0.5 * chunk_seconds and chunk < (1 << 40):
                chunk *= 2
            elif elapsed > 2 * chunk_seconds and chunk > block:
                chunk = max(block, (chunk // 2) // block * block)
            if (
                checkpoint is not None
                and _time.perf_counter() - last_checkpoint > checkpoint_seconds
                and step_of(state) < total
            ):
                checkpoint(state)
                last_checkpoint = _time.perf_counter()
        record(state)
        check(state, wall)
    return state, wall
