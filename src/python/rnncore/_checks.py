"""Argument checks with messages that name the argument, what was expected and
what came: ``x must be (T, B, 32), got (10, 4, 31)``."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = []

_FLOATS = (np.float32, np.float64)


def shape_str(shape) -> str:
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_dtype(dtype) -> np.dtype:
    if dtype is None:
        raise TypeError("dtype must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_real_array(name: str, a, dtype: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype``; integers and floats convert,
    anything else (bool, complex, object, strings) is a TypeError."""
    if a is None:
        raise TypeError(f"{name} must be a numeric array, got None")
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{name} must be a numeric array, got {type(a).__name__} ({e})") from None
    kind = arr.dtype.kind
    if kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array (float or int), got dtype {arr.dtype}")
    return np.asarray(arr, dtype=dtype, order="C")


def check_shape(name: str, arr: np.ndarray, expected: tuple, letters: tuple | None = None) -> None:
    """``expected`` holds ints; ``letters`` optional names to show for each axis."""
    if arr.ndim != len(expected) or tuple(arr.shape) != tuple(expected):
        want = shape_str(expected)
        if letters is not None and arr.ndim != len(expected):
            want = f"{len(expected)}-D {shape_str(letters)} = {want}"
        raise ValueError(f"{name} must be {want}, got {shape_str(arr.shape)}")


def as_lengths(lengths, batch: int, steps: int) -> np.ndarray | None:
    if lengths is None:
        return None
    arr = lengths if isinstance(lengths, np.ndarray) else np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            pass
        else:
            raise TypeError(f"lengths must be an integer array of shape ({batch},), got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths must be ({batch},), got {shape_str(arr.shape)}")
    lo, hi = arr.min(), arr.max()
    if lo < 1 or hi > steps:
        bad = lo if lo < 1 else hi
        raise ValueError(f"lengths must be in [1, {steps}] (T = {steps}), got {bad}")
    return np.ascontiguousarray(arr, dtype=np.int32)


def as_samples(X, dtype: np.dtype, lengths):
    """(X, lengths) for a batch of samples X (N, T, F) of a model: a 3-D real
    array of at least one sample and one step, and its lengths checked."""
    X = as_real_array("X", X, dtype)
    if X.ndim != 3:
        raise ValueError(f"X must be 3-D (N, T, F), got {X.ndim}-D array of shape {shape_str(X.shape)}")
    N, T = X.shape[0], X.shape[1]
    if N < 1 or T < 1:
        raise ValueError(f"X must have N >= 1 samples and T >= 1 steps, got {shape_str(X.shape)}")
    return X, as_lengths(lengths, N, T)
