r"""Beyond the theorem: minibatch training of the student with any optax optimizer.

The paper's theorem is about plain online SGD. One step here draws B fresh samples
:math:`x_b\sim N(0, I_d)`, :math:`y_b = f_*(x_b) + \varepsilon_b` (Gaussian inputs and teacher labels,
plus Gaussian label noise of standard deviation ``label_noise``) exactly as the SGD engine does
(:func:`companion._core.draw`: the same key gives the same samples, so ``OptimConfig("sgd")`` and
:class:`companion.sgd.SGDConfig` of one model run the same run up to round-off), computes the mean
per-sample gradient :math:`g = \frac1B\sum_b\nabla_V\tfrac12(f(x_b)-y_b)^2`
(:func:`companion.loss.minibatch_gradient`) and
applies an optax update:

.. math::
    (u_t, s_{t+1}) = \text{opt.update}(g_t, s_t, V_t), \qquad V_{t+1} = V_t + u_t .

For ``optax.sgd(lr)`` this is :math:`V_{t+1} = V_t - \eta\,g_t`, the update of
:mod:`companion.sgd`; for Adam :math:`u_t = -\eta\,\hat m_t/(\sqrt{\hat v_t} + \epsilon)` with
per-coordinate moment estimates, which is *not* rotation invariant. At log-spaced steps it
records the closed-form population loss (:func:`companion.loss.population_loss`, float64 when 64-bit
types are enabled), the
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

from companion._core import (
    cast_teacher,
    check_record,
    counter_dtype,
    drive,
    is_axes,
    record_dtype,
    record_steps,
    summary,
)
from companion._core import draw as _core_draw
from companion._validate import require_int, require_real
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import crossing_time, default_norm_bound
from companion.errors import OptimDivergenceError
from companion.loss import minibatch_gradient
from companion.teacher import Teacher, make_teacher

#: Bump when a run's meaning changes: it is part of every cache key of this module.
VERSION = "optim-2"

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


def teacher_for(model: ModelConfig, correlation: float | None = None) -> Teacher:
    """The teacher of ``model`` (equicorrelated directions if ``correlation`` is given), without the
    warning that the activation lies outside the theorem."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OUTSIDE_THEOREM.pattern, category=UserWarning)
        if correlation is None:
            return model.teacher()
        key = model.keys()["teacher"] if model.teacher_directions == "random" else None
        return make_teacher(
            model.d,
            model.P,
            beta=model.beta,
            activation=model.activation,
            directions="correlated",
            correlation=correlation,
            key=key,
            dtype=model.dtype,
        )


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
        record: number of log-spaced record steps (:func:`companion._core.log_steps`), or an explicit
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
        object.__setattr__(
            self, "lr", require_real("lr", self.lr, low=0.0, low_open=True, why=" (the learning rate must be positive)")
        )
        object.__setattr__(self, "steps", require_int("steps", self.steps, 1))
        object.__setattr__(self, "batch", require_int("batch", self.batch, 1))
        object.__setattr__(self, "label_noise", require_real("label_noise", self.label_noise, low=0.0))
        object.__setattr__(self, "record", check_record(self.record, self.steps))
        options = tuple((str(k), require_real(f"options[{k!r}]", v)) for k, v in self.options)
        object.__setattr__(self, "options", options)
        make_optimizer(self.optimizer, self.lr, **dict(options))  # unknown options raise here
        if self.max_norm_sq is not None:
            object.__setattr__(
                self, "max_norm_sq", require_real("max_norm_sq", self.max_norm_sq, low=0.0, low_open=True)
            )
        if self.correlation is not None:
            object.__setattr__(self, "correlation", require_real("correlation", self.correlation))

    def replace(self, **changes) -> OptimConfig:
        return dataclasses.replace(self, **changes)

    @property
    def record_steps(self) -> np.ndarray:
        """The record steps as an int64 array (ending at ``steps``)."""
        return record_steps(self.record, self.steps)

    def teacher(self) -> Teacher:
        """The teacher of the run (:func:`teacher_for`)."""
        return teacher_for(self.model, self.correlation)


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
        return crossing_time(
            np.maximum(self.samples, 1).astype(np.float64),
            np.max(self.overlaps.astype(np.float64) ** 2, axis=1),
            threshold,
        )


def draw(key: jax.Array, step, teacher: Teacher, batch: int, label_noise: float = 0.0):
    r"""The minibatch of step ``step``: :func:`companion._core.draw` (the SGD engine's data stream:
    :math:`x` from ``step_key(key, step)``, labels :math:`f_*(x)`, plus :math:`N(0,\text{label\_noise}^2)`
    label noise from a key folded once more). Jit-compatible for a concrete ``label_noise``."""
    return _core_draw(key, step, batch, teacher.d, teacher.directions.dtype, label_noise, teacher, False)


@partial(jax.jit, static_argnames=("optimizer", "batch", "axes", "noisy"))
def _segment(V, state, key, teacher, t0, n, lr, bound, noise, *, optimizer, batch, axes, noisy):
    """Steps t0 .. t0+n-1 (n, lr, bound, noise traced), stopping after the first bad step.

    Returns ``(V, optimizer state, steps taken, first bad step or -1)``."""
    transform = optimizer.transform(lr)
    d, dtype = V.shape[1], V.dtype

    def body(carry):
        t, V, state, bad = carry
        x, y = _core_draw(key, t, batch, d, dtype, noise, teacher, axes, noisy)
        g = minibatch_gradient(V, x, y, teacher.activation)
        updates, state = transform.update(g, state, V)
        V = optax.apply_updates(V, updates)
        w_max = jnp.max(jnp.sum(V * V, axis=-1))
        bad = jnp.where(~(w_max <= bound), t, bad)  # NaN compares False: caught
        return t + 1, V, state, bad

    def going(carry):
        t, _, _, bad = carry
        return (t < t0 + n) & (bad < 0)

    t, V, state, bad = jax.lax.while_loop(going, body, (t0, V, state, jnp.asarray(-1, t0.dtype)))
    return V, state, t, bad


@jax.jit
def _measure(V, teacher):
    return summary(V, teacher, record_dtype(V.dtype))


class _Optimizer:
    """A hashable handle (for jit's static arguments) on an optax optimizer, without its learning
    rate: ``transform(lr)`` builds it for a traced ``lr``, so new rates never recompile."""

    def __init__(self, name, options):
        self.key = (name, options)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Optimizer) and self.key == other.key

    def transform(self, lr) -> optax.GradientTransformation:
        name, options = self.key
        return OPTIMIZERS[name](learning_rate=lr, **dict(options))


class _Run(NamedTuple):
    """The trainer's state between dispatches."""

    V: jax.Array
    opt_state: object
    step: jax.Array
    bad: jax.Array


def _divergence(config: OptimConfig, bound: float, bad: int, partial_result) -> OptimDivergenceError:
    return OptimDivergenceError(
        f"{config.optimizer} diverged at step {bad} (lr = {config.lr:.4g}, batch = {config.batch}, "
        f"d = {config.model.d}): max ||v_k||^2 became non-finite or exceeded {bound:.3g}; "
        "lower the learning rate (for SGD, companion.sgd.stable_lr gives a measured safe one) or "
        "raise the batch size",
        bad,
        config.lr,
        partial_result,
    )


def _result(records, V, batch: int) -> OptimResult:
    steps = np.asarray(records["steps"], np.int64)
    return OptimResult(
        steps,
        steps * batch,
        np.asarray(records["loss"], np.float64),
        np.stack(records["overlaps"]),
        np.stack(records["norms_sq"]),
        np.asarray(V),
    )


def train(config: OptimConfig, cache=True, progress: bool = False, chunk_seconds: float = 2.0) -> OptimResult:
    r"""Run (or load) the minibatch training run ``config`` (see the module docstring).

    The steps run through :func:`companion._core.drive` (chunks of adaptive length, a divergence
    check after each); the learning rate, bound and label noise are traced (no recompilation).

    Args:
        config: the run.
        cache: ``True`` (default cache folder), a folder, a :class:`companion.cache.Cache`, or
            ``False``/``None``.
        progress: show a progress bar over the steps.
        chunk_seconds: target wall time of one dispatch.
    Raises:
        OptimDivergenceError: the norms became non-finite or exceeded the bound (``partial``
            holds the records taken before).
    """
    if not isinstance(config, OptimConfig):
        raise ValueError(f"config must be an OptimConfig, got {type(config).__name__}")
    store = Cache.resolve(cache, namespace="optim", version=VERSION)
    if store is not None:
        hit = store.load(config)
        if hit is not None:
            arr = hit[0]
            return OptimResult(
                arr["steps"],
                arr["samples"],
                arr["loss"],
                arr["overlaps"],
                arr["norms_sq"],
                arr["final_state"],
                cached=True,
            )
    V = config.model.student()
    teacher = cast_teacher(config.teacher(), V.dtype)
    key = config.model.keys()["data"]
    optimizer = _Optimizer(config.optimizer, config.options)
    bound = default_norm_bound(V, teacher) if config.max_norm_sq is None else config.max_norm_sq
    traced = (jnp.asarray(config.lr, V.dtype), jnp.asarray(bound, V.dtype), jnp.asarray(config.label_noise, V.dtype))
    static = {
        "optimizer": optimizer,
        "batch": config.batch,
        "axes": is_axes(teacher),
        "noisy": config.label_noise > 0.0,
    }
    run = _Run(
        V,
        make_optimizer(config.optimizer, config.lr, **dict(config.options)).init(V),
        jnp.zeros((), counter_dtype()),
        jnp.asarray(-1, counter_dtype()),
    )
    records: dict[str, list] = {"steps": [], "loss": [], "overlaps": [], "norms_sq": []}

    def advance(run: _Run, n: int) -> _Run:
        V, state, t, bad = _segment(
            run.V, run.opt_state, key, teacher, run.step, jnp.asarray(n, run.step.dtype), *traced, **static
        )
        return _Run(V, state, t, bad)

    def record(run: _Run):
        C, w, loss = _measure(run.V, teacher)
        records["steps"].append(int(run.step))
        records["overlaps"].append(np.asarray(C, np.float32))
        records["norms_sq"].append(np.asarray(w, np.float32))
        records["loss"].append(float(loss))

    def check(run: _Run, wall: float):
        if int(run.bad) >= 0:
            raise _divergence(
                config, float(bound), int(run.bad), _result(records, run.V, config.batch) if records["steps"] else None
            )
        if records["loss"] and not np.isfinite(records["loss"][-1]):
            raise OptimDivergenceError(
                f"{config.optimizer}: the population loss became non-finite",
                records["steps"][-1],
                config.lr,
                _result(records, run.V, config.batch),
            )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=f"{config.optimizer} B={config.batch}", unit="step")
    try:
        run, _ = drive(
            run,
            config.record_steps,
            step_of=lambda r: int(r.step),
            advance=advance,
            record=record,
            check=check,
            chunk_seconds=chunk_seconds,
            bar=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    result = _result(records, run.V, config.batch)
    if store is not None:
        store.save(config, {k: v for k, v in result._asdict().items() if k != "cached"})
    return result
