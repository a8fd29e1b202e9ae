r"""The portability check's switch: every initial student moved by one unit in the last place.

A printed number that another machine's arithmetic (another ISA, thread count or reduction order)
would change can be found on this machine by perturbing the computation as little as possible and
seeing which printed digits move. With ``COMPANION_PERTURB=ulp`` in the environment, every initial
student the package draws (:func:`companion.student.init_student` and the escape sweep's starts) has
each entry moved to the next representable number towards :math:`+\infty` — one ulp of its dtype —
and the results cache keys every run under the perturbation, so perturbed and unperturbed runs
never share an entry. ``make portability`` uses it; nothing else should.
"""

from __future__ import annotations

import os

import numpy as np

ENV_VAR = "COMPANION_PERTURB"
MODES = ("", "ulp")


def mode() -> str:
    """The perturbation in force: ``""`` (none) or ``"ulp"``; any other value is refused."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value not in MODES:
        raise ValueError(f"{ENV_VAR} must be unset or 'ulp', got {value!r}")
    return value


def perturb_start(V):
    """``V`` with every entry one ulp larger (towards +inf) under ``COMPANION_PERTURB=ulp``, else ``V``.

    Works on NumPy and JAX arrays alike and keeps the dtype.
    """
    if mode() != "ulp":
        return V
    if isinstance(V, np.ndarray):
        return np.nextafter(V, np.array(np.inf, V.dtype))
    import jax.numpy as jnp

    return jnp.nextafter(V, jnp.asarray(jnp.inf, V.dtype))
