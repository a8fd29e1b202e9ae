r"""Beyond the theorem: minibatch training of the student with any optax optimizer.

The paper's theorem is about plain online SGD. One step here draws B fresh samples
:math:`x_b\sim N(0, I_d)`, :math:`y_b = f_*(x_b) + \varepsilon_b` (:func:`companion.teacher.sample`,
plus Gaussian label noise of standard deviation ``label_noise``) from the key
``fold_in(data_key, step)``, computes the mean per-sample gradient
:math:`g = \frac1B\sum_b\nabla_V\tfrac12(f(x_b)-y_b)^2` (:func:`companion.sgd.minibatch_gradient`) and
applies an optax update:

.. math::
    (u_t, s_{t+1}) = \text{opt.update}(g_t, s_t, V_t), \qquad V_{t+1} = V_t + u_t .

For ``optax.sgd(lr)`` this is :math:`V_{t+1} = V_t - \eta\,g_t`, the update of
:mod:`companion.sgd`; for Adam :math:`u_t = -\eta\,\hat m_t/(\sqrt{\hat v_t} + \epsilon)` with
per-coordinate moment estimates, which is *not* rotation invariant. At log-spaced steps it
records the closed-form population loss (:func:`companion.loss.population_loss`, float64), the
overlaps :math:`\bar v_{k,p}` and the norms :math:`\|v_k\|^2`. The steps between two records run in
one jitted ``while_loop`` that stops at the first step whose :math:`\max_k\|v_k\|^2` is non-finite or
above a bound; :class:`OptimDivergenceError` then reports the step. Finished runs are cached
(:class:`companion.cache.Cache`, namespace ``optim``). The experiments of the chapter "Where the
assumptions break" that use it are in :mod:`companion.assumptions`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from companion._validate import require_int, require_real
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import crossing_time, default_norm_bound
from companion.loss import population_loss
from companion.sgd import log_steps, minibatch_gradient
from companion.student import overlaps as student_overlaps
from companion.teacher import Teacher, make_teacher, sample

#: Bump when a run's meaning changes: it is part of every cache key of this module.
VERSION = "optim-1"

#: The optimizers :func:`make_optimizer` knows, with the optax constructor of each.
OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "momentum": lambda learning_rate, momentum=0.9, **kw: optax.sgd(learning_rate, momentum=momentum, **kw),
    "rmsprop": optax.rmsprop,
    "sgd": optax.sgd,
}

# The teacher's check that sigma is even with k* > 2: this module leaves those assumptions on purpose.
_OUTSIDE_THEOREM = re.compile(r".*(assumes an even activation|the theory needs k\* > 2)")


def _teacher(model: ModelConfig, correlation: float | None = None) -> Teacher:
    """The teacher of ``model`` (equicorrelated directions if ``correlation`` is given), without the
    warning that the activation lies outside the theorem."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OUTSIDE_THEOREM.pattern, category=UserWarning)
        if correlation is None:
            return model.teacher()
        key = model.keys()["teacher"] if model.teacher_directions == "random" else None
        return make_teacher(model.d, model.P, beta=model.beta, activation=model.activation, directions="correlated",
                            correlation=correlation, key=key, dtype=model.dtype)


# ----------------------------------------------------------------------------------------------
# Optimizers and the minibatch trainer
# ----------------------------------------------------------------------------------------------


def make_optimizer(name: str, lr: float, **options) -> optax.GradientTransformation:
    r"""The optax optimizer ``name`` (one of :data:`OPTIMIZERS`) with learning rate ``lr``.

    ``options`` go to the optax constructor (``b1``, ``b2``, ``eps`` for Adam, ``momentum`` ...).

    Raises:
        ValueError: an unknown name (the message lists the known ones), ``lr <= 0``, or an option
            the optax constructor does not take.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    lr = require_real("lr", lr, low=0.0, low_open=True, why=" (the learning rate must be positive)")
    try:
        return OPTIMIZERS[name](learning_rate=lr, **options)
    except TypeError as error:
        raise ValueError(f"options: {name!r} does not accept {sorted(options)} ({error})") from None


@dataclass(frozen=True)
class OptimConfig:
    r"""One minibatch training run with an optax optimizer (validated; a ValueError names the field).

    Attributes:
        model: teacher and initial student (:class:`companion.config.ModelConfig`). Adam is not
            rotation invariant: with ``teacher_directions="axes"`` the teacher is aligned with the
            coordinates Adam normalizes, which is a special case; use ``"random"`` for a generic one.
        optimizer: a name of :data:`OPTIMIZERS`.
        lr: learning rate (> 0).
        steps: optimizer steps (>= 1); the number of samples is ``steps * batch``.
        batch: fresh samples per step (>= 1).
        record: number of log-spaced record steps (:func:`companion.sgd.log_steps`), or an explicit
            strictly increasing tuple of steps in [0, steps]; the last step is always recorded.
        label_noise: standard deviation of Gaussian noise added to every label (>= 0).
        options: extra constructor arguments of the optimizer, as ``(("b2", 0.99), ...)``.
        max_norm_sq: divergence bound on :math:`\|v_k\|^2` (default :math:`10^3` times the largest
            scale of the problem, as in :mod:`companion.sgd`).
        correlation: if given, the teacher has equicorrelated directions with this pairwise inner
            product (:func:`companion.teacher.correlated_directions`).
    """

    model: ModelConfig
    optimizer: str = "sgd"
    lr: float = 1e-3
    steps: int = 1000
    batch: int = 1
    record: int | tuple[int, ...] = 64
    label_noise: float = 0.0
    options: tuple[tuple[str, float], ...] = ()
    max_norm_sq: float | None = None
    correlation: float | None = None

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be a companion.config.ModelConfig, got {type(self.model).__name__}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        object.__setattr__(self, "lr", require_real("lr", self.lr, low=0.0, low_open=True,
                                                    why=" (the learning rate must be positive)"))
        require_int("steps", self.steps, 1)
        require_int("batch", self.batch, 1)
        object.__setattr__(self, "label_noise", require_real("label_noise", self.label_noise, low=0.0))
        if isinstance(self.record, (list, tuple)):
            record = tuple(require_int("record entries", s, 0, self.steps) for s in self.record)
            if not record or any(b <= a for a, b in zip(record, record[1:])):
                raise ValueError(f"record must be strictly increasing steps in [0, steps = {self.steps}], got {record}")
            object.__setattr__(self, "record", record)
        else:
            require_int("record", self.record, 1, why=" (the number of log-spaced record steps)")
        options = tuple((str(k), float(v)) for k, v in self.options)
        object.__setattr__(self, "options", options)
        make_optimizer(self.optimizer, self.lr, **dict(options))  # unknown options raise here
        if self.max_norm_sq is not None:
            object.__setattr__(self, "max_norm_sq", require_real("max_norm_sq", self.max_norm_sq, low=0.0, low_open=True))
        if self.correlation is not None:
            object.__setattr__(self, "correlation", require_real("correlation", self.correlation))

    def replace(self, **changes) -> "OptimConfig":
        return dataclasses.replace(self, **changes)

    @property
    def record_steps(self) -> np.ndarray:
        steps = self.record if isinstance(self.record, tuple) else log_steps(self.steps, self.record)
        if steps[-1] != self.steps:
            steps = (*steps, self.steps)
        return np.asarray(steps, dtype=np.int64)

    def teacher(self) -> Teacher:
        return _teacher(self.model, self.correlation)


class OptimResult(NamedTuple):
    r"""Records of one :func:`train` run (NumPy arrays).

    Attributes:
        steps: record steps, shape (R,).
        samples: samples seen at the records, ``steps * batch``, shape (R,).
        loss: closed-form population loss (noiseless), shape (R,), float64.
        overlaps: :math:`\bar v_{k,p}`, shape (R, m, P), float32.
        norms_sq: :math:`\|v_k\|^2`, shape (R, m), float32.
        final_state: V after the last step, shape (m, d).
        cached: whether this came from the cache.
    """

    steps: np.ndarray
    samples: np.ndarray
    loss: np.ndarray
    overlaps: np.ndarray
    norms_sq: np.ndarray
    final_state: np.ndarray
    cached: bool = False

    def escape_samples(self, threshold: float = 0.5) -> np.ndarray:
        r"""Samples at which :math:`\max_k\bar v_{k,p}^2` first reaches ``threshold`` (log-interpolated), shape (P,)."""
        return crossing_time(np.maximum(self.samples, 1).astype(np.float64),
                             np.max(self.overlaps.astype(np.float64) ** 2, axis=1), threshold)


class OptimDivergenceError(FloatingPointError):
    """Training diverged: a norm became non-finite or exceeded the bound.

    Attributes:
        step: the first step at which it happened.
        lr: the learning rate.
    """

    def __init__(self, message: str, step: int, lr: float):
        super().__init__(message)
        self.step, self.lr = step, lr


def draw(key: jax.Array, step, teacher: Teacher, batch: int, label_noise: float = 0.0):
    r"""The minibatch of step ``step``: :func:`companion.teacher.sample` from ``fold_in(key, step)``,
    plus :math:`N(0,\text{label\_noise}^2)` label noise from a key folded once more. Jit-compatible."""
    k = jax.random.fold_in(key, step)
    x, y = sample(k, teacher, batch)
    if label_noise > 0.0:
        y = y + label_noise * jax.random.normal(jax.random.fold_in(k, 1), y.shape, y.dtype)
    return x, y


@partial(jax.jit, static_argnames=("optimizer", "batch", "noise"))
def _segment(V, state, key, teacher, t0, t1, bound, *, optimizer, batch, noise):
    """Steps t0 .. t1-1 (dynamic bounds), stopping after the first bad step."""

    def body(carry):
        t, V, state, bad = carry
        x, y = draw(key, t, teacher, batch, noise)
        g = minibatch_gradient(V, x, y, teacher.activation)
        updates, state = optimizer.update(g, state, V)
        V = optax.apply_updates(V, updates)
        w_max = jnp.max(jnp.sum(V * V, axis=-1))
        bad = jnp.where(~(w_max <= bound), t, bad)  # NaN compares False: caught
        return t + 1, V, state, bad

    def going(carry):
        t, _, _, bad = carry
        return (t < t1) & (bad < 0)

    _, V, state, bad = jax.lax.while_loop(going, body, (t0, V, state, jnp.asarray(-1, t0.dtype)))
    return V, state, bad


@jax.jit
def _measure(V, teacher):
    t64 = jax.tree.map(lambda a: a.astype(jnp.float64), teacher)
    return student_overlaps(V, teacher), jnp.sum(V * V, axis=-1), population_loss(V.astype(jnp.float64), t64)


class _Optimizer:
    """A hashable wrapper (for jit's static arguments) around an optax transformation."""

    def __init__(self, name, lr, options):
        self.key = (name, lr, options)
        self.transform = make_optimizer(name, lr, **dict(options))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Optimizer) and self.key == other.key

    def init(self, V):
        return self.transform.init(V)

    def update(self, g, state, V):
        return self.transform.update(g, state, V)


def train(config: OptimConfig, cache=True, progress: bool = False) -> OptimResult:
    r"""Run (or load) the minibatch training run ``config`` (see the module docstring).

    Args:
        config: the run.
        cache: ``True`` (default cache folder), a folder, a :class:`companion.cache.Cache`, or
            ``False``/``None``.
        progress: show a progress bar over the records.
    Raises:
        OptimDivergenceError: the norms became non-finite or exceeded the bound.
    """
    if not isinstance(config, OptimConfig):
        raise ValueError(f"config must be an OptimConfig, got {type(config).__name__}")
    store = Cache.resolve(cache, namespace="optim", version=VERSION)
    if store is not None:
        hit = store.load(config)
        if hit is not None:
            arr = hit[0]
            return OptimResult(arr["steps"], arr["samples"], arr["loss"], arr["overlaps"], arr["norms_sq"],
                               arr["final_state"], cached=True)
    teacher = config.teacher()
    V = config.model.student()
    teacher = jax.tree.map(lambda a: a.astype(V.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, teacher)
    key = config.model.keys()["data"]
    optimizer = _Optimizer(config.optimizer, config.lr, config.options)
    state = optimizer.init(V)
    bound = jnp.asarray(default_norm_bound(V, teacher) if config.max_norm_sq is None else config.max_norm_sq, V.dtype)
    records = {"steps": [], "loss": [], "overlaps": [], "norms_sq": []}
    targets = config.record_steps
    iterator = targets
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(targets, desc=f"{config.optimizer} B={config.batch}", unit="record")
    now = 0
    for target in iterator:
        target = int(target)
        if target > now:
            V, state, bad = _segment(V, state, key, teacher, jnp.asarray(now, jnp.int64), jnp.asarray(target, jnp.int64),
                                     bound, optimizer=optimizer, batch=config.batch, noise=config.label_noise)
            bad = int(bad)
            if bad >= 0:
                raise OptimDivergenceError(
                    f"{config.optimizer} diverged at step {bad} (lr = {config.lr:.4g}, batch = {config.batch}, "
                    f"d = {config.model.d}): max ||v_k||^2 became non-finite or exceeded {float(bound):.3g}; "
                    "lower the learning rate (for SGD, companion.sgd.stable_lr gives a measured safe one) or "
                    "raise the batch size", bad, config.lr)
            now = target
        C, w, loss = _measure(V, teacher)
        records["steps"].append(now)
        records["overlaps"].append(np.asarray(C, np.float32))
        records["norms_sq"].append(np.asarray(w, np.float32))
        records["loss"].append(float(loss))
    steps = np.asarray(records["steps"], np.int64)
    result = OptimResult(steps, steps * config.batch, np.asarray(records["loss"], np.float64),
                         np.stack(records["overlaps"]), np.stack(records["norms_sq"]), np.asarray(V))
    if not np.all(np.isfinite(result.loss)):
        raise OptimDivergenceError(f"{config.optimizer}: the population loss became non-finite", int(steps[-1]), config.lr)
    if store is not None:
        store.save(config, {k: v for k, v in result._asdict().items() if k != "cached"})
    return result
