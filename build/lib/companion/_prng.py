r"""The data stream's random numbers: one step key and a fast, bit-identical normal sampler.

Every engine draws the minibatch of step t from :func:`step_key` ``(key, t)``, so a run's data do
not depend on how it is chunked, blocked or resumed, and two engines given the same key see the
same samples (:func:`companion._core.draw`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _rotl(v, r: int):
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(k1, k2, x0, x1):
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


def normal(key, shape, dtype):
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
        or not jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
        or str(jax.random.key_impl(key)) != "threefry2x32"
        or n >= 2**32
    ):
        return jax.random.normal(key, shape, dtype)
    kd = jax.random.key_data(key)
    counts = jax.lax.iota(jnp.uint32, n).reshape(shape)
    b1, b2 = threefry2x32(kd[0], kd[1], jnp.zeros(shape, jnp.uint32), counts)
    mantissa = ((b1 ^ b2) >> np.uint32(9)) | np.uint32(0x3F800000)  # a float in [1, 2)
    f = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    lo, hi = np.nextafter(np.float32(-1.0), np.float32(0.0)), np.float32(1.0)
    u = jnp.maximum(lo, f * (hi - lo) + lo)
    return np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)


def step_key(key, t):
    """Key of step t: fold in the high and low 32-bit halves of t.

    With 64-bit types off, step counters are int32 (steps < 2**31) and the high half is 0, so the
    stream is the same either way.
    """
    t = jnp.asarray(t)
    if t.dtype.itemsize == 8:
        hi = (t >> 32).astype(jnp.uint32)
        lo = (t & 0xFFFFFFFF).astype(jnp.uint32)
    else:
        hi = jnp.zeros((), jnp.uint32)
        lo = t.astype(jnp.uint32)
    return jax.random.fold_in(jax.random.fold_in(key, hi), lo)
