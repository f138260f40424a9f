"""The fuzz harness's shared parts: settings, the failure log, presenting
arrays in valid and invalid forms, comparing results (see tests/test_fuzz.py)."""
from __future__ import annotations

import json
import os
import re
import sys
import traceback

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
if HERE not in sys.path:  # workers and --import-mode=importlib
    sys.path.insert(0, HERE)
ENV_EXAMPLES = "RNNCORE_FUZZ_EXAMPLES"
LONG = bool(os.environ.get(ENV_EXAMPLES))

# Examples per fuzz loop in the default (CI) mode.
DEFAULT_EXAMPLES = {"layer": 2700, "model": 900, "binding": 900, "gemm": 600}

# Exceptions a bad call may raise (plus rc.NonFiniteError for training steps).
ACCEPTED = (ValueError, TypeError, MemoryError, OverflowError, KeyError)

# Address-space limit of the child processes (bytes): far above what any valid
# case needs, far below the machine's memory, so "cannot be allocated" is a
# MemoryError and never the OOM killer. Not applied under AddressSanitizer
# (its shadow memory needs terabytes of address space; tools/sanitize.sh caps
# single allocations with max_allocation_size_mb instead).
CHILD_AS_LIMIT = 6 << 30


def n_examples(name: str) -> int:
    """Examples of fuzz loop ``name`` (split evenly over the cell kinds)."""
    return int(os.environ[ENV_EXAMPLES]) if LONG else DEFAULT_EXAMPLES[name]


# ===========================================================================
# Everything below runs in the child process.
# ===========================================================================

_COUNTS = {"examples": 0, "cases": 0, "returned": 0, "raised": 0}
# Long mode keeps going after a failure: every distinct failure (by its first
# line, digits masked) is kept with the first case that showed it, and all are
# reported at the end; the default mode stops at the first and shrinks it.
KEEP_GOING = LONG
_FAILURES: dict = {}


def _guarded(kind: str, run, c: dict) -> None:
    if not KEEP_GOING:
        run(c)
        return
    try:
        run(c)
    except AssertionError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()
                 and not ln.startswith(("Not equal to tolerance", "Arrays are not equal"))]
        first = lines[0] if lines else ""
        key = (c.get("cell"), re.sub(r"\d+", "#", first)[:160])
        if key not in _FAILURES:
            _FAILURES[key] = (json.dumps({"kind": kind, **c}, default=repr), str(e)[:3000])
            # said now too: a later crash of the child must not lose it
            print(f"FAILURE {_FAILURES[key][0]}\n{first[:300]}", file=sys.stderr, flush=True)


def _case(kind: str, case: dict) -> None:
    """Announce a case before running it (the parent shows the last one on a crash)."""
    _COUNTS["cases"] += 1
    sys.stdout.write("CASE " + json.dumps({"kind": kind, **case}, default=repr) + "\n")
    sys.stdout.flush()


def _settings(name: str, parts: int = 1):
    from hypothesis import HealthCheck, settings
    n = max(1, -(-n_examples(name) // parts))
    return settings(max_examples=n, deadline=None, derandomize=not LONG,
                    database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def _fail(msg: str):
    raise AssertionError(msg)


def _check_raised(e: BaseException, what: str, name: str | None = None) -> None:
    """``e`` must be an accepted exception; with ``name``, its message names it."""
    import rnncore as rc
    ok = ACCEPTED + (rc.NonFiniteError,)
    if not isinstance(e, ok):
        _fail(f"{what}: raised {type(e).__name__} (not one of "
              f"{', '.join(c.__name__ for c in ok)}): {e}\n" + "".join(traceback.format_exception(e)))
    if name is not None and not isinstance(e, MemoryError):
        pat = r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])"
        if not re.search(pat, str(e)):
            _fail(f"{what}: {type(e).__name__} does not name {name!r}: {e}")


def _check_names(e: BaseException, what: str, names) -> None:
    """An accepted exception whose message names one of ``names``."""
    _check_raised(e, what)
    if isinstance(e, MemoryError):
        return
    for n in names:
        if re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", str(e)):
            return
    _fail(f"{what}: {type(e).__name__} does not name {' or '.join(map(repr, names))}: {e}")


def _eq(a, b, what: str) -> None:
    """Bitwise equality, NaN equal to NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        _fail(f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
    if not np.array_equal(a, b, equal_nan=True):
        diff = np.argwhere(~((a == b) | (np.isnan(a) & np.isnan(b))))
        _fail(f"{what}: differ at {len(diff)} positions, first {diff[:3].tolist()}: "
              f"{a[tuple(diff[0])]!r} vs {b[tuple(diff[0])]!r}")


def _close(actual, desired, dtype, what: str) -> None:
    rtol, atol = (3e-4, 3e-5) if np.dtype(dtype) == np.float32 else (1e-8, 1e-10)
    desired = np.asarray(desired, np.float64)
    scale = max(1.0, float(np.max(np.abs(desired))) if desired.size else 1.0)
    np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol=rtol, atol=atol * scale,
                               err_msg=what)


# ---------------------------------------------------------------------------
# Presenting an array: valid forms (same values, other layouts and dtypes)
# and invalid ones
# ---------------------------------------------------------------------------

# Forms the public API must accept (integers and floats convert; any layout).
VALID_FORMS = ("c", "other_float", "f16", "int8", "int64", "uint8", "fortran", "noncontig",
               "negstride", "bcast", "list", "readonly", "big_endian")
# Forms it must reject with a TypeError.
BAD_DTYPE_FORMS = ("bool", "complex64", "complex128", "object", "str", "bytes", "datetime",
                   "none", "ragged")


def present(base: np.ndarray, form: str, dtype):
    """``base`` (float64 values) presented as ``form``; valid forms keep the
    values up to the conversion (integer forms round them)."""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):  # NaN to int: whatever the cast gives
        return _present(base, form, dtype)


def _present(base, form, dtype):
    if form == "c":
        return np.ascontiguousarray(base, dtype)
    if form == "other_float":
        return base.astype(np.float64 if dtype == np.float32 else np.float32)
    if form == "f16":
        return base.astype(np.float16)
    if form == "int8":
        return np.clip(np.round(base), -3, 3).astype(np.int8)
    if form == "int64":
        return np.clip(np.round(base), -3, 3).astype(np.int64)
    if form == "uint8":
        return np.clip(np.round(np.abs(base)), 0, 3).astype(np.uint8)
    if form == "fortran":
        return np.asfortranarray(base.astype(dtype))
    if form == "noncontig":
        big = np.zeros(tuple(2 * s + 1 for s in base.shape), dtype)
        view = big[tuple(slice(1, None, 2) for _ in base.shape)]
        view[...] = base
        return view
    if form == "negstride":
        flip = tuple(slice(None, None, -1) for _ in base.shape)
        return np.ascontiguousarray(base.astype(dtype)[flip])[flip]
    if form == "bcast":  # stride 0 along the longest axis (values repeated)
        if base.ndim == 0 or base.size == 0:
            return np.ascontiguousarray(base, dtype)
        ax = int(np.argmax(base.shape))
        one = np.take(base.astype(dtype), [0], axis=ax)
        return np.broadcast_to(one, base.shape)
    if form == "list":
        return base.astype(dtype).tolist()
    if form == "readonly":
        r = base.astype(dtype)
        r.flags.writeable = False
        return r
    if form == "big_endian":
        return base.astype(dtype.newbyteorder(">"))
    # invalid dtypes
    if form == "bool":
        return base > 0
    if form == "complex64":
        return base.astype(np.complex64)
    if form == "complex128":
        return base.astype(np.complex128) + 1j
    if form == "object":
        return base.astype(object)
    if form == "str":
        return base.astype(str)
    if form == "bytes":
        return base.astype("S12")
    if form == "datetime":
        return np.round(base).astype(np.int64).astype("datetime64[s]")
    if form == "none":
        return None
    if form == "ragged":
        lst = base.tolist()
        if base.ndim >= 2 and base.shape[0] >= 1:
            lst = [lst[0], [1.0]] if base.shape[0] >= 1 else lst
        else:
            lst = [[1.0], [1.0, 2.0]]
        return lst
    raise AssertionError(form)


def clean(pres, dtype) -> np.ndarray:
    """The clean C-contiguous float copy of a validly presented array."""
    return np.ascontiguousarray(np.asarray(pres), dtype=dtype)


def add_specials(base: np.ndarray, special: str | None, rng) -> np.ndarray:
    """Put NaN / Inf / huge / subnormal values at a few random positions."""
    if special is None or base.size == 0:
        return base
    out = base.copy()
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 3e37, "tiny": 1e-41,
             "negzero": -0.0}[special]
    k = int(rng.integers(1, 3))
    for _ in range(k):
        out[tuple(int(rng.integers(0, s)) for s in base.shape)] = value
    return out

