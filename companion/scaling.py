r"""How many emergences add up to a scaling law: the superposition formula.

If direction p is learned abruptly at its escape time :math:`T_p` and then contributes nothing
(automatic cancellation), the population loss is a superposition of steps

.. math::
    \mathcal L(t) \approx \tfrac12\,\mathbb E[\sigma^2] \sum_p a_p^2\, \mathbf 1\{t < T_p\}.
"""

from __future__ import annotations

import numpy as np

from companion._validate import require_real


def superposition_loss(coefficients, escape_times, times, second_moment: float = 1.0) -> np.ndarray:
    r""":math:`\tfrac12\,\mathbb E[\sigma^2]\sum_p a_p^2\,\mathbf 1\{t < T_p\}` at each t.

    Args:
        coefficients: :math:`a`, shape (P,).
        escape_times: :math:`T_p`, shape (P,) (``inf`` for a direction never learned).
        times: shape (n,).
        second_moment: :math:`\mathbb E[\sigma^2]` (1 for a normalized Hermite activation).
    Returns:
        shape (n,), float64.
    """
    a = np.asarray(coefficients, dtype=np.float64)
    T = np.asarray(escape_times, dtype=np.float64)
    if a.shape != T.shape:
        raise ValueError(f"escape_times must have the shape of coefficients {a.shape}, got {T.shape}")
    t = np.asarray(times, dtype=np.float64)
    return 0.5 * second_moment * ((t[:, None] < T[None, :]) * a**2).sum(axis=1)


def idealized_escape_times(coefficients, scale: float = 1.0) -> np.ndarray:
    r""":math:`T_p = C / a_p`: escape times when every direction starts from the same overlap.

    With a common initial overlap :math:`s_0` and :math:`\sigma = h_4`, the decoupled ODE gives
    :math:`T_p = 1/(8 a_p s_0)`, i.e. :math:`C = 1/(8 s_0)`. Random initial overlaps scatter the
    :math:`T_p` around this; the chapter on greedy selection takes them into account.
    """
    scale = require_real("scale", scale, low=0.0, low_open=True)
    return scale / np.asarray(coefficients, dtype=np.float64)


def time_exponent(beta: float) -> float:
    r"""The predicted exponent of :math:`\mathcal L(t) \propto t^{-(2\beta-1)/\beta}` (for :math:`\beta > 1/2`)."""
    beta = require_real("beta", beta, low=0.5, low_open=True)
    return (1.0 - 2.0 * beta) / beta
