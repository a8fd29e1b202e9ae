"""Validation helpers: every check raises a ValueError that names the parameter and its range.

Validation happens once, where a value enters (constructors and configs), never inside jitted code.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


class InputTypeError(TypeError, ValueError):
    """A value of the wrong type (a string for a number, a bool for an integer, an integer dtype for
    a floating-point one). Both a TypeError and a ValueError, so that callers catching either see it."""


def require_int(name: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}{why}")
    return value


def require_real(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> float:
    """Return ``value`` as a finite float in the stated interval or raise a ValueError.

    Strings, bytes and booleans are refused (a TypeError naming ``name``), never parsed: ``"0.8"``
    is not a number here, and configurations built from ``1``, ``1.0`` and ``np.float32(1)`` all
    hold the same float (one cache key)."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise InputTypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        interval = f"{lo or '(-inf'}, {hi or 'inf)'}"
        raise ValueError(f"{name} must lie in {interval}, got {value}{why}")
    return value


def require_finite_array(name: str, array) -> np.ndarray:
    """Raise a ValueError if ``array`` holds a NaN or an infinity; return it as a NumPy array."""
    arr = np.asarray(array)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, but {bad} of its {arr.size} entries are NaN or inf")
    return arr


def warn(message: str) -> None:
    """Warn the user (a UserWarning attributed to the caller's caller)."""
    warnings.warn(message, UserWarning, stacklevel=3)


def require_float_dtype(name: str, dtype) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype if it is float32 or float64, else raise naming ``name``."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise InputTypeError(f"{name} must be 'float32' or 'float64', got {dtype!r}") from None
    if resolved not in (np.dtype("float32"), np.dtype("float64")):
        raise InputTypeError(f"{name} must be 'float32' or 'float64' (a floating-point type), got {resolved.name}")
    return resolved
