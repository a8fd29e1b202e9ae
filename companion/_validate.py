"""Validation helpers: every check raises a ValueError that names the parameter and its range.

Validation happens once, where a value enters (constructors and configs), never inside jitted code.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def require_int(name: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
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
    """Return ``value`` as a finite float in the stated interval or raise a ValueError."""
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
