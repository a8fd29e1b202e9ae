r"""The errors every engine raises when a run leaves the region its dynamics can reach.

All derive from :class:`DivergenceError` (itself a :class:`FloatingPointError`), so a caller that
probes learning rates or step sizes catches one class whatever the engine:

* :class:`SGDDivergenceError` — the online-SGD engine (:mod:`companion.sgd`);
* :class:`OptimDivergenceError` — the optax trainer (:mod:`companion.optim`);
* :class:`BlowUpError` — the gradient-flow integrators (:mod:`companion.dynamics`).
"""

from __future__ import annotations

from typing import Any


class DivergenceError(FloatingPointError):
    r"""A run diverged: a norm :math:`\|v_k\|^2` became non-finite or exceeded the divergence bound.

    The message names where it happened and the stable range to use instead.

    Attributes:
        step: the first step (over all runs) at which the bound was broken, or None (flows).
        time: the gradient-flow time at which it was detected (``lr * step`` for SGD), or None.
        lr: the learning rate (or Euler step), or None.
        partial: what was recorded before the divergence (an engine's result type), or None.
    """

    def __init__(
        self,
        message: str,
        step: int | None = None,
        time: float | None = None,
        lr: float | None = None,
        partial: Any = None,
    ):
        super().__init__(message)
        self.step, self.time, self.lr, self.partial = step, time, lr, partial


class SGDDivergenceError(DivergenceError):
    """Online SGD diverged (:func:`companion.sgd.simulate`).

    Attributes (besides :class:`DivergenceError`'s):
        seeds: indices of the runs that diverged.
    """

    def __init__(self, message: str, step: int, lr: float, seeds, partial=None):
        super().__init__(message, step=step, time=lr * step, lr=lr, partial=partial)
        self.seeds = list(seeds)


class OptimDivergenceError(DivergenceError):
    """Training with an optax optimizer diverged (:func:`companion.optim.train`)."""

    def __init__(self, message: str, step: int, lr: float, partial=None):
        super().__init__(message, step=step, time=None, lr=lr, partial=partial)


class BlowUpError(DivergenceError):
    """A gradient-flow integration blew up (non-finite or exploding norms).

    ``time`` is the gradient-flow time at which the blow-up was detected.
    """

    def __init__(self, message: str, time: float, step: int | None = None, lr: float | None = None):
        super().__init__(message, step=step, time=time, lr=lr)
