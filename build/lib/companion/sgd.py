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
``step_key(key, t)`` (:func:`companion._core.draw`, shared with the optax trainer), so the data stream does not depend on the block size, the chunking, or on
resuming from a checkpoint. Only summaries are recorded, at chosen steps: the overlaps
:math:`\bar v_{k,p}` (m × P), the output weights :math:`\|v_k\|^2` (m) and the closed-form
population loss (:func:`companion.loss.population_loss`, evaluated in float64 when 64-bit types are
enabled, :func:`companion.enable_float64`, else in the state's dtype). Time is reported
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

**Modules.** This module holds the cached entry point :func:`run_sgd` and re-exports the rest:
the configuration and result types (:mod:`companion._sgd_types`), the jitted engine and
:func:`simulate` (:mod:`companion._sgd_engine`), checkpoint and cache serialization
(:mod:`companion._sgd_store`), the minibatch gradient (:mod:`companion.loss`) and the learning-rate
theory (:mod:`companion.learning_rate`).
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp

from companion._core import log_steps
from companion._sgd_engine import default_vectorize, simulate
from companion._sgd_store import load_partial, load_result, save_partial, save_result
from companion._sgd_types import SGDConfig, SGDResult, SGDState, auto_block
from companion.errors import SGDDivergenceError
from companion.learning_rate import (
    EDGE_C,
    STABILITY_NOTE,
    THEORY_LR_CONSTANT,
    THEORY_LR_NOTE,
    divergence_time,
    find_stability_edge,
    stability_edge,
    stable_lr,
    theory_lr,
)
from companion.loss import minibatch_gradient, minibatch_loss, sgd_step

__all__ = [
    "EDGE_C",
    "ENGINE_VERSION",
    "STABILITY_NOTE",
    "THEORY_LR_CONSTANT",
    "THEORY_LR_NOTE",
    "SGDConfig",
    "SGDDivergenceError",
    "SGDResult",
    "SGDState",
    "auto_block",
    "build",
    "default_vectorize",
    "divergence_time",
    "find_stability_edge",
    "log_steps",
    "minibatch_gradient",
    "minibatch_loss",
    "run_sgd",
    "sgd_step",
    "simulate",
    "stability_edge",
    "stable_lr",
    "theory_lr",
]

#: Bump when the engine's arithmetic or random stream changes: it is part of every cache key.
ENGINE_VERSION = "sgd-1"


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
        hit = load_result(store, config)
        if hit is not None:
            return hit

    teachers, V0, keys = build(config)
    resume = load_partial(store, config) if store is not None else None
    checkpoint = None if store is None else partial(save_partial, store, config)
    result = simulate(
        teachers,
        V0,
        keys,
        config.lr,
        config.record_steps,
        batch=config.batch,
        label_noise=config.label_noise,
        block=config.block_steps,
        max_norm_sq=config.max_norm_sq,
        vectorize=vectorize,
        devices=devices,
        progress=progress,
        chunk_seconds=chunk_seconds,
        checkpoint=checkpoint,
        checkpoint_seconds=checkpoint_seconds,
        resume=resume,
        config=config,
    )
    if store is not None:
        save_result(store, config, result)
    return result
