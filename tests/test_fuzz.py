"""Property-based fuzzing (hypothesis) of every public entry point.

Covered: the layers (rc.LSTM, GRU, RNN, LeakyRNN, SkipRNN, ClockworkRNN:
``__call__``, ``forward``, ``backward``), the model (rc.Sequential:
``predict``, ``fit`` for one step, ``evaluate``) and the private bindings
(``rnncore._core.forward_f32/f64``, ``backward_f32/f64``, ``gemm_f32/f64``:
valid argument tuples captured from a real call, one element mutated at a
time), plus sizes that cannot be allocated.

The contract checked (DESIGN.md, "never a crash and never a silent wrong
answer"): every call either

* returns a correct result: for valid input, the same as the same call on a
  clean C-contiguous float copy of its arguments, the shapes of the contract,
  and (for the layers) the float64 numpy reference of tests/_reference.py on
  every batch row whose input is finite; or
* raises a clear Python exception: ValueError, TypeError, MemoryError,
  OverflowError or KeyError (and rc.NonFiniteError, the documented error of
  a non-finite training step), whose message names the argument when the
  argument is a public one -- never RuntimeError, SystemError or
  AttributeError, and never a crash.

Every fuzz loop runs in a child process (this file run as a script with
``--fuzz-child NAME``), under an address-space limit so that nothing can
exhaust the machine's memory: a segfault, an abort or a hang becomes a failed
test that shows the last case started (a JSON line that ``--replay`` runs
again), instead of killing pytest.

Examples: few by default (the whole file runs in well under a minute, with
``derandomize=True`` so CI is reproducible); many, randomised, with

    RNNCORE_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz.py -s

Replay one case printed by a failure:

    python tests/test_fuzz.py --replay layer '{"cell": "lstm", ...}'
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # workers and --import-mode=importlib
    sys.path.insert(0, HERE)
from _numeric import deep_copy as _deep_copy, get_path as _get, replace_path as _replace  # noqa: E402
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


# ---------------------------------------------------------------------------
# The parent side: run a fuzz loop in a child process
# ---------------------------------------------------------------------------

def _child_env() -> dict:
    import rnncore
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    # hypothesis keeps a cache in ./.hypothesis; not in the source tree
    env.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                   os.path.join(tempfile.gettempdir(), "rnncore-fuzz-hypothesis"))
    return env


def _run_child(name: str, *extra: str, timeout: float | None = None) -> str:
    """Run fuzz loop ``name`` in a child; fail with the last case on a crash."""
    if timeout is None:
        timeout = None if LONG else 240
    cmd = [sys.executable, os.path.abspath(__file__), "--fuzz-child", name, *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env())
        out, err, code, hung = proc.stdout, proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        code, hung = None, True
    elapsed = time.perf_counter() - t0
    last = None
    done = None
    for line in out.splitlines():
        if line.startswith("CASE "):
            last = line[5:]
        elif line.startswith("DONE "):
            done = line[5:]
    if code == 0 and done is not None:
        print(f"[fuzz {name}] {done} in {elapsed:.1f} s")
        return done
    # a failed check exits with status 1 and says why; anything else is a crash
    failed = code == 1 and ("Traceback" in err or "distinct failure" in err) and not _SANITIZER.search(err)
    if hung:
        what = f"hung (no answer in {timeout} s)"
    elif code is not None and code < 0:
        what = f"crashed with signal {-code}"
    elif not failed:
        what = f"crashed (exit status {code})"
    else:
        what = f"failed (exit status {code})"
    msg = [f"fuzz child {name!r} {what}."]
    if last is not None and not failed:
        msg.append(f"Last case started (replay with: python {os.path.relpath(__file__)} "
                   f"--replay {name} '<case>'):\n{last}")
    san = _sanitizer_report(err)
    if san:
        msg.append("sanitizer report (first frames):\n" + san)
    report = [line for line in out.splitlines() if not line.startswith(("CASE ", "DONE "))]
    if report:
        msg.append("stdout (tail, without the case lines):\n" + "\n".join(report)[-6000:])
    err = "\n".join(line[:400] for line in err.splitlines())  # C++ frames can be very long
    msg.append("stderr (tail):\n" + err[-(30000 if LONG else 8000):])
    pytest.fail("\n".join(msg), pytrace=False)


_SANITIZER = re.compile(r"runtime error: |ERROR: AddressSanitizer|Sanitizer:DEADLYSIGNAL|"
                        r"SUMMARY: (Address|UndefinedBehavior)Sanitizer")


def _sanitizer_report(err: str, frames: int = 8) -> str:
    """The sanitizer lines of a child's stderr, each with its first stack frames."""
    lines = err.splitlines()
    out = []
    for i, line in enumerate(lines):
        if _SANITIZER.search(line):
            out.append(line[:400])
            out += [ln[:300] for ln in lines[i + 1:i + 1 + frames] if ln.lstrip().startswith("#")]
    return "\n".join(out[:200])


def test_fuzz_layers():
    _run_child("layer")


def test_fuzz_model():
    _run_child("model")


def test_fuzz_bindings_forward_backward():
    _run_child("binding")


def test_fuzz_bindings_gemm():
    _run_child("gemm")


def test_huge_sizes_raise_memory_or_value_error():
    # a fixed list: after a crash the child goes on with the next case, and
    # every crash is reported
    crashes, start = [], 0
    while True:
        try:
            _run_child("huge", str(start))
            break
        except pytest.fail.Exception as e:
            text = str(e)
            m = re.search(r'"index": (\d+)', text.split("Last case started")[-1]) \
                if "Last case started" in text else None
            crashes.append(text)
            if m is None:  # failed (not crashed) at the end of the list
                break
            start = int(m.group(1)) + 1
    if crashes:
        pytest.fail("\n\n".join(crashes), pytrace=False)


def test_huge_layer_fails_before_allocating():
    _run_child("huge_rss")


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


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------

# cell id -> (rnncore class, reference cell)
CELLS = {"lstm": ("LSTM", "lstm"), "lstm_peephole": ("LSTM", "lstm"), "gru": ("GRU", "gru"),
         "gru_v1": ("GRU", "gru"), "rnn_tanh": ("RNN", "rnn_tanh"), "rnn_relu": ("RNN", "rnn_relu"),
         "leaky": ("LeakyRNN", "leaky"), "skip": ("SkipRNN", "skip"),
         "clockwork": ("ClockworkRNN", "clockwork")}

# Steps of a clockwork state: ordinary ones, and ones at the end of int64
# where step0 + t no longer fits (a correct answer, or an error, is expected).
BIG_STEPS = [2 ** 62, 2 ** 63 - 40, 2 ** 63 - 2, 2 ** 63 - 1, 2 ** 63, 2 ** 64 + 3, 10 ** 30]


def layer_cases(cell):
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        c = {}
        c["cell"] = cell
        c["dtype"] = draw(st.sampled_from(["float32", "float64"]))
        c["L"] = draw(st.integers(1, 2))
        c["bidirectional"] = draw(st.booleans())
        c["batch_first"] = draw(st.booleans())
        c["bias"] = draw(st.booleans())
        c["I"] = draw(st.integers(1, 6))
        if c["cell"] == "clockwork":
            c["periods"] = draw(st.sampled_from([[1], [1, 2], [1, 3], [2, 3, 5], [1, 2, 4, 8]]))
            c["H"] = len(c["periods"]) * draw(st.sampled_from([1, 1, 2, 3, 4, 11]))
        else:  # mostly within one vector block; sometimes several (threads own blocks)
            c["H"] = draw(st.one_of(st.integers(1, 12), st.sampled_from([17, 33])))
        if c["cell"] == "skip":
            c["delays"] = draw(st.sampled_from([[1], [2], [1, 2], [1, 3], [3, 1], [2, 5], [1, 2, 7]]))
        if c["cell"] == "leaky":
            c["leaky"] = draw(st.sampled_from(["alpha0", "alpha", "timescales", "learn"]))
        c["T"] = draw(st.sampled_from([1, 1, 2, 3, 5, 8, 13]))
        c["B"] = draw(st.sampled_from([1, 1, 2, 3, 5, 9, 17]))  # register tiles of up to 16 rows
        c["seed"] = draw(st.integers(0, 2 ** 32 - 1))
        c["method"] = draw(st.sampled_from(["call", "forward", "backward", "backward"]))
        c["threads"] = draw(st.sampled_from([1, 2, 3]))
        c["force_team"] = draw(st.booleans())
        c["isa"] = draw(st.sampled_from(["best", "generic", "avx2"]))
        c["x_form"] = draw(st.sampled_from(VALID_FORMS))
        c["x_special"] = draw(st.sampled_from([None] * 6 + ["nan", "inf", "-inf", "huge", "tiny",
                                                             "negzero"]))
        c["lengths"] = draw(st.sampled_from(["none", "none", "random", "random_list", "all_T",
                                             "all_1", "int8", "uint64", "float_whole", "noncontig"]))
        c["state"] = draw(st.sampled_from(["none", "none", "given", "given_other_float",
                                           "given_list", "given_fortran", "given_noncontig",
                                           "given_int", "given_nan"]))
        if c["cell"] == "clockwork":
            c["step"] = draw(st.one_of(st.integers(0, 50), st.integers(0, 2 ** 40),
                                       st.sampled_from(BIG_STEPS)))
        if c["method"] == "backward":
            c["dy_form"] = draw(st.sampled_from(VALID_FORMS))
            c["dstate"] = draw(st.sampled_from(["none", "given", "given_list"]))
            c["tape_reuse"] = draw(st.booleans())
        if c["cell"] not in ("lstm", "lstm_peephole", "clockwork"):
            # a nested list where one array is the state reads as a tuple of
            # states: the layers refuse it (breaking "state"/"list" below)
            c["state"] = "given" if c["state"] == "given_list" else c["state"]
            if c.get("dstate") == "given_list":
                c["dstate"] = "given"
        # one argument broken, or none
        slots = ["none", "none", "none", "x", "lengths", "state", "param"]
        if c["method"] == "backward":
            slots += ["dy", "dstate", "tape"]
        c["break"] = draw(st.sampled_from(slots))
        c["how"] = draw(st.sampled_from(BREAKS[c["break"]]))
        return c

    return strat()


BREAKS = {
    "none": [None],
    "x": list(BAD_DTYPE_FORMS) + ["ndim2", "ndim4", "I+1", "I-1", "T0", "B0", "scalar", "dict"],
    "lengths": ["zero", "negative", "T+1", "huge", "B+1", "2d", "scalar", "fraction", "nan",
                "bool", "str", "object_none", "complex", "empty"],
    "state": ["axis+1", "axis-1", "ndim+1", "ndim-1", "structure", "complex", "bool", "object",
              "str", "none_inside", "step_negative", "step_float", "step_str", "list"],
    "param": ["view_fortran", "view_noncontig", "dtype", "shape", "missing", "list", "int"],
    "dy": ["shape", "ndim", "complex", "object", "none", "str"],
    "dstate": ["axis+1", "structure", "complex", "none_inside"],
    "tape": ["other_layer", "none", "tuple", "dict"],
}
# breakings that are valid input (the result must equal the clean call's)
VALID_BREAKS = {("param", "view_fortran"), ("param", "view_noncontig")}


def _make_layer(c):
    import rnncore as rc
    cls = getattr(rc, CELLS[c["cell"]][0])
    kw = {}
    if c["cell"] == "lstm_peephole":
        kw["peephole"] = True
    elif c["cell"] == "gru_v1":
        kw["reset_after"] = False
    elif c["cell"] == "rnn_relu":
        kw["nonlinearity"] = "relu"
    elif c["cell"] == "skip":
        kw["delays"] = tuple(c["delays"])
    elif c["cell"] == "clockwork":
        kw["periods"] = tuple(c["periods"])
    elif c["cell"] == "leaky":
        kw = {"alpha0": {"alpha": 0.0}, "alpha": {"alpha": 0.7},
              "timescales": {"timescales": (1.0, 20.0)},
              "learn": {"timescales": (2.0, 5.0), "learn_alpha": True}}[c["leaky"]]
    return cls(c["I"], c["H"], num_layers=c["L"], bias=c["bias"], batch_first=c["batch_first"],
               bidirectional=c["bidirectional"], dtype=np.dtype(c["dtype"]), seed=c["seed"], **kw)


def _ref_kw(c):
    cell = CELLS[c["cell"]][1]
    if c["cell"] == "lstm_peephole":
        return cell, {"peephole": True}
    if c["cell"] == "gru_v1":
        return cell, {"reset_after": False}
    if c["cell"] == "gru":
        return cell, {"reset_after": True}
    if cell == "skip":
        return cell, {"delays": tuple(c["delays"])}
    if cell == "clockwork":
        return cell, {"periods": tuple(c["periods"])}
    return cell, {}


def _state_arrays(c, rng):
    """Valid state for the case (float64 arrays), structured as the layer takes it."""
    D = 2 if c["bidirectional"] else 1
    LD, B, H = c["L"] * D, c["B"], c["H"]
    if c["cell"] == "skip":
        return rng.uniform(-0.5, 0.5, (LD, max(c["delays"]), B, H))
    h = rng.uniform(-0.5, 0.5, (LD, B, H))
    if c["cell"] in ("lstm", "lstm_peephole"):
        return (h, rng.uniform(-0.5, 0.5, (LD, B, H)))
    if c["cell"] == "clockwork":
        return (h, c.get("step", 0))
    return h


def _map_state(state, f):
    """Apply f to the arrays of a state (tuple or array); ints kept."""
    if isinstance(state, tuple):
        return tuple(f(s) if isinstance(s, np.ndarray) else s for s in state)
    return f(state)


def _map_pres(state, f):
    """Apply f to the (presented: arrays or lists) parts of a state; ints kept."""
    def g(s):
        return s if isinstance(s, (int, np.integer)) and not isinstance(s, bool) else f(s)
    if isinstance(state, tuple):
        return tuple(g(s) for s in state)
    return f(state)


def _state_flat(state) -> dict:
    if isinstance(state, tuple):
        return {f"state[{i}]": s for i, s in enumerate(state)}
    return {"state": state}


def _present_state(state, how, dtype, rng):
    form = {"given": "c", "given_other_float": "other_float", "given_list": "list",
            "given_fortran": "fortran", "given_noncontig": "noncontig", "given_int": "int8",
            "given_nan": "c"}[how]
    if how == "given_nan":
        state = _map_state(state, lambda a: add_specials(a, "nan", rng))
    return _map_state(state, lambda a: present(a, form, dtype))


def _break_state(state, how, c, rng):
    """A broken state; None if this breaking does not apply to the cell."""
    arrays = [s for s in (state if isinstance(state, tuple) else (state,)) if isinstance(s, np.ndarray)]
    h = arrays[0]
    clock = c["cell"] == "clockwork"
    if how in ("axis+1", "axis-1"):
        ax = int(rng.integers(0, h.ndim))
        shape = list(h.shape)
        shape[ax] += 1 if how == "axis+1" else -1
        bad = np.zeros(shape)
    elif how == "ndim+1":
        bad = h[..., None]
    elif how == "ndim-1":
        bad = h[0]
    elif how == "structure":
        if isinstance(state, tuple):
            return h  # a bare array where a tuple is expected
        return (h, h)  # a tuple where one array is expected
    elif how in ("complex", "bool", "object", "str"):
        bad = present(h, {"complex": "complex128"}.get(how, how), np.float64)
    elif how == "none_inside":
        if not isinstance(state, tuple):
            return None
        return (None,) + tuple(state[1:])
    elif how == "list":  # a nested list for a one-array state
        if isinstance(state, tuple):
            return None
        return state.tolist()
    elif how.startswith("step_"):
        if not clock:
            return None
        step = {"step_negative": -1, "step_float": 2.0, "step_str": "2"}[how]
        return (h, step)
    else:
        raise AssertionError(how)
    if isinstance(state, tuple):
        return (bad,) + tuple(state[1:])
    return bad


def _lengths(c, rng):
    """(presented lengths, clean int64 lengths or None, valid?)."""
    B, T = c["B"], c["T"]
    how = c["lengths"]
    if how == "none":
        return None, None
    lens = rng.integers(1, T + 1, B)
    if how == "all_T":
        lens[:] = T
    elif how == "all_1":
        lens[:] = 1
    if how in ("random", "all_T", "all_1"):
        return lens, lens
    if how == "random_list":
        return lens.tolist(), lens
    if how == "int8":
        return lens.astype(np.int8), lens
    if how == "uint64":
        return lens.astype(np.uint64), lens
    if how == "float_whole":
        return lens.astype(np.float64), lens
    if how == "noncontig":
        big = np.zeros(2 * B, np.int64)
        big[::2] = lens
        return big[::2], lens
    raise AssertionError(how)


def _break_lengths(c, rng):
    B, T = c["B"], c["T"]
    lens = rng.integers(1, T + 1, B)
    how = c["how"]
    i = int(rng.integers(0, B))
    if how == "zero":
        lens[i] = 0
    elif how == "negative":
        lens[i] = -1
    elif how == "T+1":
        lens[i] = T + 1
    elif how == "huge":
        lens[i] = 2 ** 40
    elif how == "B+1":
        return np.ones(B + 1, np.int64)
    elif how == "2d":
        return lens[:, None]
    elif how == "scalar":
        return np.int64(T)
    elif how == "fraction":
        return lens + 0.5
    elif how == "nan":
        f = lens.astype(np.float64)
        f[i] = np.nan
        return f
    elif how == "bool":
        return lens > 0
    elif how == "str":
        return lens.astype(str)
    elif how == "object_none":
        return [None] * B
    elif how == "complex":
        return lens.astype(np.complex128)
    elif how == "empty":
        return np.zeros(0, np.int64)
    return lens


def _break_x(c, x_base, dtype):
    how = c["how"]
    if how in BAD_DTYPE_FORMS:
        return present(x_base, how, dtype)
    if how == "ndim2":
        return np.ascontiguousarray(x_base[0], dtype)
    if how == "ndim4":
        return np.ascontiguousarray(x_base[..., None], dtype)
    if how in ("I+1", "I-1"):
        I = x_base.shape[2] + (1 if how == "I+1" else -1)
        return np.zeros(x_base.shape[:2] + (I,), dtype)
    if how == "T0":
        shape = list(x_base.shape)
        shape[1 if c["batch_first"] else 0] = 0
        return np.zeros(shape, dtype)
    if how == "B0":
        shape = list(x_base.shape)
        shape[0 if c["batch_first"] else 1] = 0
        return np.zeros(shape, dtype)
    if how == "scalar":
        return 1.0
    if how == "dict":
        return {"x": x_base}
    raise AssertionError(how)


def _break_param(layer, how, rng):
    """Break (or validly re-present) one parameter of ``layer``; returns its name."""
    names = sorted(layer.params)
    name = names[int(rng.integers(0, len(names)))]
    p = layer.params[name]
    if how == "view_fortran":
        layer.params[name] = np.asfortranarray(p) if p.ndim == 2 else p
    elif how == "view_noncontig":
        big = np.zeros((2 * p.size,), p.dtype)
        big[::2] = p.ravel()
        layer.params[name] = big[::2].reshape(p.shape) if p.ndim == 1 else np.asfortranarray(p)
    elif how == "dtype":
        layer.params[name] = p.astype(np.float64 if p.dtype == np.float32 else np.float32)
    elif how == "shape":
        layer.params[name] = np.zeros(p.shape[:-1] + (p.shape[-1] + 1,), p.dtype)
    elif how == "missing":
        del layer.params[name]
    elif how == "list":
        layer.params[name] = p.tolist()
    elif how == "int":
        layer.params[name] = p.astype(np.int64)
    return name


def _run_layer(layer, c, x, state, lengths, dy, dstate, tape_mode="own", other=None):
    """The call of the case; returns name -> output (arrays and clockwork steps)."""
    out = {}
    if c["method"] == "call":
        y, st = layer(x, state=state, lengths=lengths)
    else:
        y, st, tape = layer.forward(x, state=state, lengths=lengths)
    out["y"] = y
    out.update(_state_flat(st))
    if c["method"] == "backward":
        layer.zero_grad()
        if tape_mode == "other_layer":
            _, _, tape = other.forward(x, state=state, lengths=lengths)
        elif tape_mode in ("none", "tuple", "dict"):
            tape = {"none": None, "tuple": (1, 2), "dict": {}}[tape_mode]
        dx, ds = layer.backward(tape, dy, dstate)
        out["dx"] = dx
        out.update({"d" + k: v for k, v in _state_flat(ds).items()})
        grads1 = {k: v.copy() for k, v in layer.grads.items()}
        out.update({f"grads[{k}]": v for k, v in grads1.items()})
        if c.get("tape_reuse"):  # a tape can be used twice: same dx, grads added again
            dx2, _ = layer.backward(tape, dy, dstate)
            _eq(dx2, dx, "dx of a second backward through the same tape")
            for k, g in layer.grads.items():
                np.testing.assert_allclose(g, 2 * grads1[k], rtol=1e-5, atol=1e-6,
                                           err_msg=f"grads[{k}] after two backward passes")
    return out


def _set_runtime(c):
    import rnncore as rc
    from rnncore import _core
    from rnncore.runtime import _select_isa
    rc.set_num_threads(c.get("threads", 1))
    _core.set_min_work_per_thread(1 if c.get("force_team") else _DEFAULT_MIN_WORK[0])
    isa = c.get("isa", "best")
    avail = rc.available_isas()
    _select_isa(avail[-1] if isa == "best" or isa not in avail else isa)


_DEFAULT_MIN_WORK = [None]


def run_layer_case(c: dict) -> None:
    import rnncore as rc
    import _reference as ref
    _set_runtime(c)
    dtype = np.dtype(c["dtype"])
    rng = np.random.default_rng(c["seed"])
    D = 2 if c["bidirectional"] else 1
    T, B, I, H = c["T"], c["B"], c["I"], c["H"]
    tm_shape = (T, B, I)
    x_tm = rng.uniform(-2, 2, tm_shape)
    x_tm = add_specials(x_tm, c["x_special"], rng)
    to_layout = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if c["batch_first"] else (lambda a: a)
    x_base = to_layout(x_tm)
    lengths_p, lengths_clean = _lengths(c, rng)
    state_base = None if c["state"] == "none" else _state_arrays(c, rng)
    state_p = None if state_base is None else _present_state(state_base, c["state"], dtype, rng)
    if c["cell"] == "clockwork" and state_base is None and c["step"] != 0:
        state_base = _state_arrays(c, rng)  # a step needs a state
        state_p = _present_state(state_base, "given", dtype, rng)
    x_p = present(x_base, c["x_form"], dtype)

    dy_p = dstate_p = dy_clean = dstate_clean = None
    if c["method"] == "backward":
        dy_base = to_layout(rng.uniform(-1, 1, (T, B, D * H)))
        dy_p = present(dy_base, c["dy_form"], dtype)
        dy_clean = clean(dy_p, dtype)
        if c["dstate"] != "none":
            ds = _state_arrays(c, rng)
            dstate_p = _map_state(ds, lambda a: present(a, "list" if c["dstate"] == "given_list" else "c", dtype))
            dstate_clean = _map_pres(dstate_p, lambda a: clean(a, dtype))

    layer = _make_layer(c)
    twin = _make_layer(c)  # same seed: same parameters; runs the clean call
    brk, how = c["break"], c["how"]
    valid = brk == "none" or (brk, how) in VALID_BREAKS
    name = {"x": "x", "lengths": "lengths", "state": "state", "dy": "dy", "dstate": "dstate",
            "tape": "tape"}.get(brk)
    tape_mode = "own"
    if brk == "x":
        x_p = _break_x(c, x_base, dtype)
    elif brk == "lengths":
        lengths_p = _break_lengths(c, rng)
    elif brk == "state":
        base = state_base if state_base is not None else _state_arrays(c, rng)
        broken = _break_state(base, how, c, rng)
        if broken is None:
            valid = True
        else:
            state_p = broken
    elif brk == "param":
        name = _break_param(layer, how, rng)
    elif brk == "dy":
        shape = np.shape(dy_clean)
        dy_p = {"shape": lambda: np.zeros(shape[:-1] + (shape[-1] + 1,)),
                "ndim": lambda: np.zeros(shape[:2]), "complex": lambda: dy_clean + 1j,
                "object": lambda: dy_clean.astype(object), "none": lambda: None,
                "str": lambda: dy_clean.astype(str)}[how]()
    elif brk == "dstate":
        broken = _break_state(_state_arrays(c, rng), how, c, rng)
        if broken is None:
            valid = True
        else:
            dstate_p = broken
    elif brk == "tape":
        tape_mode = how
    if c["cell"] == "clockwork" and c.get("step", 0) > 2 ** 62:
        valid = None  # past the documented 2**62: a correct answer or an OverflowError/ValueError/TypeError

    what = f"{type(layer).__name__}.{c['method']} with {brk}={how}"
    _case("layer", c)
    try:
        out = _run_layer(layer, c, x_p, state_p, lengths_p, dy_p, dstate_p, tape_mode, other=twin)
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001 - the type is what is checked
        if valid is True:
            _fail(f"{what}: valid input rejected: {type(e).__name__}: {e}\n"
                  + "".join(traceback.format_exception(e)))
        _check_raised(e, what, None if valid is None else name)
        _COUNTS["raised"] += 1
        return
    _COUNTS["returned"] += 1
    if valid is False:
        _fail(f"{what}: invalid input accepted silently")

    # -- the result is correct ------------------------------------------------
    x_c = clean(x_p, dtype)
    state_c = None if state_p is None else _map_pres(state_p, lambda a: clean(a, dtype))
    dy_c = None if dy_p is None else clean(dy_p, dtype)
    lengths_c = None if lengths_clean is None else np.asarray(lengths_clean)
    out_c = _run_layer(twin, dict(c, tape_reuse=False), x_c, state_c, lengths_c, dy_c, dstate_clean)
    seq = (B, T, D * H) if c["batch_first"] else (T, B, D * H)
    if out["y"].shape != seq or out["y"].dtype != dtype:
        _fail(f"{what}: y is {out['y'].dtype}{out['y'].shape}, expected {dtype}{seq}")
    for k in out_c:
        if isinstance(out_c[k], np.ndarray):
            _eq(out[k], out_c[k], f"{what}: {k} differs from the call on a clean contiguous copy")
        else:
            if out[k] != out_c[k]:
                _fail(f"{what}: {k} = {out[k]!r}, clean call gives {out_c[k]!r}")
    if c["cell"] == "clockwork":
        step0 = 0 if state_c is None else state_c[1]
        if out["state[1]"] != step0 + T:
            _fail(f"{what}: returned step {out['state[1]']!r}, expected {step0 + T}")

    # y is exactly 0 past each row's length
    y_tm = out["y"].transpose(1, 0, 2) if c["batch_first"] else out["y"]
    if lengths_c is not None:
        for b in range(B):
            if np.any(y_tm[int(lengths_c[b]):, b] != 0):
                _fail(f"{what}: y is not 0 past lengths[{b}] = {lengths_c[b]}")

    # the float64 numpy reference, on every row whose input is clean
    xc_tm = x_c.transpose(1, 0, 2) if c["batch_first"] else x_c
    lens = np.full(B, T) if lengths_c is None else lengths_c.astype(np.int64)
    row_ok = np.array([np.all(np.isfinite(xc_tm[:lens[b], b])) and np.all(np.abs(xc_tm[:lens[b], b]) < 1e6)
                       for b in range(B)])
    if state_c is not None:
        for s in (state_c if isinstance(state_c, tuple) else (state_c,)):
            if isinstance(s, np.ndarray):
                row_ok &= np.array([np.all(np.isfinite(s[..., b, :])) for b in range(B)])
    if not row_ok.any():
        return
    rcell, rkw = _ref_kw(c)
    params64 = {k: np.asarray(v, np.float64) for k, v in twin.params.items()}
    xr = np.where(row_ok[None, :, None], xc_tm.astype(np.float64), 0.0)
    st_r = None
    if state_c is not None:
        def zero_bad(s):
            s = s.astype(np.float64)
            s[..., ~row_ok, :] = 0.0
            return s
        st_r = _map_state(state_c, zero_bad)
        if c["cell"] == "clockwork":
            lcm = math.lcm(*c["periods"])
            st_r = (st_r[0], st_r[1] % lcm)  # the same phase, within int64
    with np.errstate(all="ignore"):
        y_r, fin_r, cache = ref.forward(rcell, params64, xr, st_r, lens, hidden_size=H,
                                        num_layers=c["L"], bidirectional=c["bidirectional"], **rkw)
    _close(y_tm[:, row_ok], y_r[:, row_ok], dtype, f"{what}: y vs the numpy reference")
    fin_r = _state_flat(fin_r)
    for k, v in fin_r.items():
        if isinstance(v, np.ndarray):
            _close(out[k][..., row_ok, :], v[..., row_ok, :], dtype, f"{what}: final {k} vs the reference")
    if c["method"] != "backward" or not row_ok.all():
        return
    if dstate_clean is not None and c["cell"] == "clockwork":
        ds_r = (dstate_clean[0].astype(np.float64), 0)
    else:
        ds_r = None if dstate_clean is None else _map_state(dstate_clean, lambda a: a.astype(np.float64))
    dy_tm = dy_c.transpose(1, 0, 2) if c["batch_first"] else dy_c
    with np.errstate(all="ignore"):
        dx_r, ds0_r, g_r = ref.backward(cache, dy_tm.astype(np.float64), ds_r)
    dx_tm = out["dx"].transpose(1, 0, 2) if c["batch_first"] else out["dx"]
    _close(dx_tm, dx_r, dtype, f"{what}: dx vs the reference")
    for k, v in _state_flat(ds0_r).items():
        if isinstance(v, np.ndarray):
            _close(out["d" + k], v, dtype, f"{what}: d{k} (initial state) vs the reference")
    for k, v in g_r.items():
        _close(out[f"grads[{k}]"], v, dtype, f"{what}: grads[{k}] vs the reference")


def _per_cell(name, cases, run):
    """One hypothesis run per cell kind, so that every kind gets its share;
    the explicit examples of EXPLICIT[name][cell] always run first."""
    from hypothesis import example, given
    failed = []
    for cell in sorted(CELLS):
        def fuzz(c):
            _COUNTS["examples"] += 1
            _guarded(name, run, c)
        fuzz = given(cases(cell))(fuzz)
        for ex in reversed(EXPLICIT.get(name, {}).get(cell, [])):
            fuzz = example(ex)(fuzz)
        fuzz = _settings(name, parts=len(CELLS))(fuzz)
        try:
            fuzz()
        except Exception as e:  # noqa: BLE001 - every cell kind runs; all failures reported
            sys.stdout.flush()
            traceback.print_exc()
            print(f"^^^ {name} fuzz of {cell!r} failed\n", file=sys.stderr, flush=True)
            first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
            failed.append(f"{cell}: {type(e).__name__}: {first}")
    if failed:
        _fail(f"{name} fuzz failed for {len(failed)} cell kind(s) (details above):\n  "
              + "\n  ".join(failed))


def _fuzz_layer():
    _per_cell("layer", layer_cases, run_layer_case)


def _layer_case(cell, **kw):
    """A complete layer case (for explicit examples)."""
    c = {"cell": cell, "dtype": "float32", "L": 1, "bidirectional": False, "batch_first": False,
         "bias": True, "I": 3, "H": 6, "T": 5, "B": 3, "seed": 1, "method": "call", "threads": 2,
         "force_team": True, "isa": "best", "x_form": "c", "x_special": None, "lengths": "random",
         "state": "given", "break": "none", "how": None}
    if cell == "clockwork":
        c.update(periods=[1, 2, 3], step=7)
    if cell == "skip":
        c["delays"] = [1, 3]
    if cell == "leaky":
        c["leaky"] = "learn"
    c.update(kw)
    if c["method"] == "backward":
        c.setdefault("dy_form", "c")
        c.setdefault("dstate", "given")
        c.setdefault("tape_reuse", True)
    return c


def _model_case(cell, **kw):
    c = {"cell": cell, "dtype": "float32", "F": 2, "H": 6, "bidirectional": False,
         "batch_first": False, "linear": True, "out": 2, "readout": "last", "N": 3, "T": 4, "seed": 1,
         "method": "fit", "loss": "mse", "lengths": "none", "X_form": "c", "Y_form": "c",
         "x_special": None, "y_special": None, "batch_size": 3, "optimizer": "Adam", "clip_norm": None,
         "bptt": None, "on_nonfinite": "raise", "threads": 1, "break": "none", "how": None}
    if cell == "clockwork":
        c["periods"] = [1, 2, 3]
    if cell == "skip":
        c["delays"] = [1, 2]
    if cell == "leaky":
        c["leaky"] = "alpha"
    c.update(kw)
    return c


def _binding_case(cell, variant, entry, path, how, **kw):
    c = {"cell": cell, "dtype": "float32", "bidir": False, "batch_first": False, "variant": variant,
         "entry": entry, "force_team": False, "batch": [[list(path), how]]}
    c.update(kw)
    return c


# Explicit examples: every cell kind in its richest valid form, and the edge
# cases that found bugs (so that CI always runs them, whatever hypothesis draws).
EXPLICIT = {
    "layer": {cell: [
        _layer_case(cell, method="backward", L=2, bidirectional=True),
        _layer_case(cell, method="backward", batch_first=True, dtype="float64", x_form="noncontig",
                    lengths="random_list", state="given_fortran", B=17, H=12 if cell == "clockwork" else 33,
                    T=13),
    ] for cell in CELLS},
    "model": {cell: [_model_case(cell), _model_case(cell, method="predict", readout="all",
                                                    bidirectional=True, lengths="random")]
              for cell in CELLS},
    "binding": {},
}
# clockwork: a step near the end of int64 (step0 + t overflows in the core)
EXPLICIT["layer"]["clockwork"] += [
    _layer_case("clockwork", periods=[1, 3], H=2, T=5, B=1, step=2 ** 63 - 2, lengths="none",
                state="none"),
    _layer_case("clockwork", periods=[2, 3, 5], H=6, T=13, step=2 ** 63 - 40),
]
# fit's other arguments
EXPLICIT["model"]["lstm"] += [_model_case("lstm", **{"break": "optimizer", "how": "adam"}),
                              _model_case("lstm", **{"break": "clip_norm", "how": "np_float32"})]
EXPLICIT["model"]["gru"] += [_model_case("gru", **{"break": "callbacks", "how": "int"}),
                             _model_case("gru", **{"break": "seed", "how": -1})]
# skip: a delay of 2**31 - 1 with no state given (the core sizes the history itself)
EXPLICIT["binding"]["skip"] = [
    _binding_case("skip", "minimal", "forward", (0, 9), {"set": [1, 2 ** 31 - 1]}),
    _binding_case("skip", "minimal", "backward", (0, 9), {"set": [1, 2 ** 31 - 1]}),
]
# an output aliasing an input: refused, or the answer of the non-aliased call
EXPLICIT["binding"]["gru"] = [_binding_case("gru", "full", "backward", (14, 0), {"alias": [2, 0]})]
EXPLICIT["binding"]["lstm"] = [_binding_case("lstm", "full", "forward", (6,), {"alias": [1]}),
                               _binding_case("lstm", "full", "backward", (10,), {"alias": [7]})]


# ---------------------------------------------------------------------------
# The model: Sequential.predict, evaluate, fit (one step)
# ---------------------------------------------------------------------------

MODEL_BREAKS = {
    "none": [None],
    "X": list(BAD_DTYPE_FORMS) + ["ndim2", "ndim4", "F+1", "N0", "T0"],
    "Y": ["N+1", "ndim", "complex", "object", "str", "none", "float_for_ce", "class_range"],
    "lengths": ["zero", "T+1", "B+1", "2d", "fraction", "bool", "str"],
    "batch_size": [0, -1, 1.5, "2", None, True],
    "epochs": [-1, 1.0, "1", None],
    "loss": ["foo", None, 3],
    "optimizer": ["adam", "sgd", 3, "object"],
    "clip_norm": [0, -1.0, "a", float("nan"), "np_float32", float("inf")],
    "clip_value": [0, -2, "a"],
    "bptt": [0, -1, 1.5, "2"],
    "on_nonfinite": ["ignore", None],
    "validation_data": ["one", "short_Y", "str", "bad_X"],
    "callbacks": ["int", "none", "object"],
    "seed": [-1, "a", 1.5],
}
# breakings that are valid (the call must work), and ones that may go either way
MODEL_VALID = {("clip_norm", "np_float32")}
MODEL_MAYBE = {("optimizer", "adam"), ("optimizer", "sgd"), ("clip_norm", float("inf")),
               ("batch_size", True)}


def model_cases(cell):
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        c = {}
        c["cell"] = cell
        c["dtype"] = draw(st.sampled_from(["float32", "float64"]))
        c["F"] = draw(st.integers(1, 4))
        c["H"] = draw(st.integers(1, 6))
        if c["cell"] == "clockwork":
            c["periods"] = draw(st.sampled_from([[1], [1, 2], [1, 3]]))
            c["H"] = len(c["periods"]) * draw(st.integers(1, 3))
        if c["cell"] == "skip":
            c["delays"] = draw(st.sampled_from([[1], [1, 2], [3]]))
        if c["cell"] == "leaky":
            c["leaky"] = draw(st.sampled_from(["alpha", "timescales", "learn"]))
        c["bidirectional"] = draw(st.booleans())
        c["batch_first"] = draw(st.booleans())
        c["linear"] = draw(st.booleans())
        c["out"] = draw(st.integers(1, 3))
        c["readout"] = draw(st.sampled_from(["last", "all"]))
        c["N"] = draw(st.sampled_from([1, 2, 3, 5]))
        c["T"] = draw(st.sampled_from([1, 2, 3, 6]))
        c["seed"] = draw(st.integers(0, 2 ** 32 - 1))
        c["method"] = draw(st.sampled_from(["predict", "evaluate", "fit", "fit"]))
        c["loss"] = draw(st.sampled_from(["mse", "mse", "cross_entropy"]))
        c["lengths"] = draw(st.sampled_from(["none", "none", "random", "random_list"]))
        c["X_form"] = draw(st.sampled_from(VALID_FORMS))
        c["Y_form"] = draw(st.sampled_from(["c", "list", "other_float", "int64", "noncontig"]))
        c["x_special"] = draw(st.sampled_from([None] * 5 + ["nan", "inf", "huge"]))
        c["y_special"] = draw(st.sampled_from([None] * 6 + ["nan", "inf"]))
        c["batch_size"] = draw(st.integers(1, 7))
        c["optimizer"] = draw(st.sampled_from(["SGD", "Adam", "RMSprop"]))
        c["clip_norm"] = draw(st.sampled_from([None, None, 0.5, 1e-3]))
        c["bptt"] = draw(st.sampled_from([None, None, 1, 2]))
        c["on_nonfinite"] = draw(st.sampled_from(["raise", "skip"]))
        c["threads"] = draw(st.sampled_from([1, 2]))
        c["break"] = draw(st.sampled_from(["none"] * 4 + sorted(MODEL_BREAKS)))
        c["how"] = draw(st.sampled_from(MODEL_BREAKS[c["break"]]))
        return c

    return strat()


def _make_model(c):
    import rnncore as rc
    lc = dict(c, I=c["F"], L=1, bias=True)
    rec = _make_layer(lc)
    D = 2 if c["bidirectional"] else 1
    layers = [rec]
    if c["linear"]:
        layers.append(rc.Linear(D * c["H"], c["out"], dtype=np.dtype(c["dtype"]), seed=c["seed"] % 1000))
    return rc.Sequential(*layers, readout=c["readout"])


def _model_out_width(c):
    D = 2 if c["bidirectional"] else 1
    return c["out"] if c["linear"] else D * c["H"]


def _manual_predict(model, c, X, lengths):
    """What predict must compute, from the layers' own calls."""
    rec = model.layers[0]
    xs = X if c["batch_first"] else np.ascontiguousarray(X.transpose(1, 0, 2))
    y, _ = rec(xs, lengths=lengths)
    y = y if c["batch_first"] else y.transpose(1, 0, 2)  # (N, T, D*H)
    if c["readout"] == "last":
        N, T = y.shape[:2]
        last = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
        h = y[np.arange(N), last].copy()
        if c["bidirectional"]:
            h[:, c["H"]:] = y[:, 0, c["H"]:]
        y = h
    if c["linear"]:
        lin = model.layers[1]
        y = y @ lin.params["weight"].T.astype(np.float64) + lin.params["bias"]
    return y


def _ref_loss(c, pred, Y, lengths):
    pred = pred.astype(np.float64)
    mask = None
    if c["readout"] == "all" and lengths is not None:
        mask = np.arange(c["T"])[None, :] < np.asarray(lengths)[:, None]
    if c["loss"] == "mse":
        d2 = (pred - np.asarray(Y, np.float64)) ** 2
        if mask is not None:
            d2 = d2[mask]
        return float(d2.mean()) if d2.size else 0.0
    z = pred - pred.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    Yi = np.asarray(Y).astype(np.int64)
    nll = -np.take_along_axis(logp, Yi[..., None], axis=-1)[..., 0]
    if mask is not None:
        nll = nll[mask]
    return float(nll.mean()) if nll.size else 0.0


def _fit_kwargs(c, X, Y, lengths):
    import rnncore as rc
    opt = getattr(rc.optim, c["optimizer"])(lr=0.05)
    kw = dict(loss=c["loss"], optimizer=opt, epochs=1, batch_size=max(c["N"], c["batch_size"]),
              shuffle=False, clip_norm=c["clip_norm"], bptt=c["bptt"], lengths=lengths,
              on_nonfinite=c["on_nonfinite"], progress=False)
    return kw


def run_model_case(c: dict) -> None:
    import rnncore as rc
    _set_runtime(c)
    dtype = np.dtype(c["dtype"])
    rng = np.random.default_rng(c["seed"])
    N, T, F = c["N"], c["T"], c["F"]
    Fo = _model_out_width(c)
    X_base = add_specials(rng.uniform(-2, 2, (N, T, F)), c["x_special"], rng)
    X_p = present(X_base, c["X_form"], dtype)
    lens = None
    if c["lengths"] != "none":
        lens = rng.integers(1, T + 1, N)
    lengths_p = lens.tolist() if c["lengths"] == "random_list" and lens is not None else lens
    ce = c["loss"] == "cross_entropy"
    yshape = (N, Fo) if c["readout"] == "last" else (N, T, Fo)
    if ce:  # class indices
        Yi = rng.integers(0, Fo, yshape[:-1])
        Y_p = {"c": lambda: Yi, "list": lambda: Yi.tolist(), "other_float": lambda: Yi.astype(np.int8),
               "int64": lambda: Yi.astype(np.uint8),
               "noncontig": lambda: present(Yi.astype(np.float64), "noncontig", np.int64)}[c["Y_form"]]()
    else:
        Y_base = add_specials(rng.uniform(-1, 1, yshape), c["y_special"], rng)
        Y_p = present(Y_base, c["Y_form"], dtype)

    model = _make_model(c)
    twin = _make_model(c)
    method, brk, how = c["method"], c["break"], c["how"]
    fit_kw = _fit_kwargs(c, X_p, Y_p, lengths_p)
    pred_bs = c["batch_size"]
    loss_arg = c["loss"]
    uses = {"predict": {"X", "lengths", "batch_size"},
            "evaluate": {"X", "Y", "lengths", "batch_size", "loss"}}.get(method, set(MODEL_BREAKS))
    valid = True
    names = (brk,)
    if brk != "none" and brk in uses:
        valid = None if (brk, how) in MODEL_MAYBE else (brk, how) in MODEL_VALID
    if brk == "X":
        names = ("X", "x")
        X_p = {"ndim2": lambda: np.zeros((N, F)), "ndim4": lambda: np.zeros((N, T, F, 1)),
               "F+1": lambda: np.zeros((N, T, F + 1)), "N0": lambda: np.zeros((0, T, F)),
               "T0": lambda: np.zeros((N, 0, F))}.get(how, lambda: present(X_base, how, dtype))()
    elif brk == "Y":
        names = ("Y", "target")
        Ya = np.asarray(Y_p)
        if how == "N+1":
            Y_p = np.zeros((N + 1,) + Ya.shape[1:], Ya.dtype)
        elif how == "ndim":
            Y_p = np.zeros(Ya.shape + (2,), Ya.dtype)
        elif how in ("complex", "object", "str"):
            Y_p = present(Ya.astype(np.float64), {"complex": "complex128"}.get(how, how), dtype)
        elif how == "none":
            Y_p = None
        elif how == "float_for_ce":
            if ce:
                Y_p = Ya.astype(np.float64) + 0.5
            elif method != "predict":
                valid = True
        elif how == "class_range":
            if ce:
                Y_p = Ya.copy()
                Y_p.flat[0] = Fo
            elif method != "predict":
                valid = True
        if how == "ndim" and ce and c["readout"] == "last" and method != "predict":
            valid = None  # (N, 2) class indices for (N, C) logits: a trailing axis of 2 is wrong
    elif brk == "lengths":
        lengths_p = _break_lengths(dict(c, B=N, how=how), rng)
        fit_kw["lengths"] = lengths_p
    elif brk == "batch_size":
        pred_bs = how
        fit_kw["batch_size"] = how
    elif brk == "loss":
        loss_arg = how
        fit_kw["loss"] = how
    elif brk != "none":
        value = how
        if brk == "optimizer" and how == "object":
            value = object()
        elif brk == "clip_norm" and how == "np_float32":
            value = np.float32(1.0)
        elif brk == "validation_data":
            names = ("validation_data", "X", "x", "Y")
            value = {"one": (X_p,), "short_Y": (X_p, np.asarray(Y_p)[:0]), "str": "val",
                     "bad_X": (np.zeros((N, T, F + 1)), Y_p)}[how]
        elif brk == "callbacks":
            value = {"int": [1], "none": None, "object": [object()]}[how]
            if how == "none":
                valid = True  # None means no callbacks, as in Keras
        fit_kw[brk] = value
    if method == "fit" and fit_kw["bptt"] and c["readout"] == "last" and lengths_p is not None:
        # documented: needs sequences of equal length (checked before some other arguments)
        if valid is True:
            valid, names = False, ("bptt",)
        elif brk != "lengths":
            names = names + ("bptt",)
    nonfinite_possible = c["x_special"] is not None or (c["y_special"] is not None and not ce)
    if method == "fit" and nonfinite_possible and valid is True:
        valid = None  # a non-finite step: NonFiniteError ("raise") or skipped ("skip")
    what = f"Sequential.{method} with {brk}={how!r}"

    def call(m, X, Y, lengths, bs, kw):
        if method == "predict":
            return {"pred": m.predict(X, lengths=lengths, batch_size=bs)}
        if method == "evaluate":
            return {"loss": m.evaluate(X, Y, loss=loss_arg, lengths=lengths, batch_size=bs)}
        hist = m.fit(X, Y, **kw)
        out = {f"params[{k}]": v.copy() for k, v in m.params.items()}
        out["history_loss"] = hist["loss"][0]
        out["skipped"] = len(hist.skipped)
        return out

    _case("model", c)
    try:
        out = call(model, X_p, Y_p, lengths_p, pred_bs, fit_kw)
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001
        if valid is True:
            _fail(f"{what}: valid input rejected: {type(e).__name__}: {e}\n"
                  + "".join(traceback.format_exception(e)))
        if isinstance(e, rc.NonFiniteError):
            if not (method == "fit" and nonfinite_possible):
                _fail(f"{what}: NonFiniteError with finite input: {e}")
            _COUNTS["raised"] += 1
            return
        if valid is False:
            _check_names(e, what, names)
        else:
            _check_raised(e, what)
        _COUNTS["raised"] += 1
        return
    _COUNTS["returned"] += 1
    if valid is False:
        _fail(f"{what}: invalid input accepted silently")
    # same as the call on clean copies
    X_c = clean(X_p, dtype)
    Y_c = np.asarray(Y_p) if ce else clean(Y_p, dtype)
    lens_c = None if lengths_p is None else np.asarray(lengths_p, np.int64)
    kw_c = dict(fit_kw, lengths=lens_c, optimizer=getattr(rc.optim, c["optimizer"])(lr=0.05))
    if isinstance(fit_kw.get("optimizer"), str):
        kw_c["optimizer"] = rc.optim.get(fit_kw["optimizer"])
    out_c = call(twin, X_c, Y_c, lens_c, pred_bs if isinstance(pred_bs, int) else N, kw_c)
    for k, v in out_c.items():
        if isinstance(v, np.ndarray):
            _eq(out[k], v, f"{what}: {k} differs from the call on clean contiguous copies")
        elif not (v == out[k] or (isinstance(v, float) and math.isnan(v) and math.isnan(out[k]))):
            _fail(f"{what}: {k} = {out[k]!r}, the clean call gives {v!r}")
    finite_in = np.all(np.isfinite(X_c)) and np.all(np.abs(X_c) < 1e6)
    if method == "predict":
        pred = out["pred"]
        shape = (N, Fo) if c["readout"] == "last" else (N, T, Fo)
        if pred.shape != shape or pred.dtype != dtype:
            _fail(f"{what}: predict gave {pred.dtype}{pred.shape}, expected {dtype}{shape}")
        if finite_in:
            if not np.all(np.isfinite(pred)):
                _fail(f"{what}: non-finite prediction for finite input")
            want = _manual_predict(twin, c, X_c, lens_c)
            _close(pred, want, dtype, f"{what}: predict vs the layers' own calls")
            whole = twin.predict(X_c, lengths=lens_c, batch_size=10 ** 9)
            _close(pred, whole, dtype, f"{what}: predict in batches vs in one batch")
    elif method == "evaluate":
        if finite_in and (ce or np.all(np.isfinite(Y_c))):
            pred = twin.predict(X_c, lengths=lens_c)
            want = _ref_loss(c, pred, Y_c, lens_c)
            if not math.isclose(out["loss"], want, rel_tol=1e-4 if dtype == np.float32 else 1e-9,
                                abs_tol=1e-6 if dtype == np.float32 else 1e-12):
                _fail(f"{what}: evaluate gave {out['loss']!r}, the loss of predict is {want!r}")
    else:
        for k, v in out.items():
            if k.startswith("params[") and not np.all(np.isfinite(v)):
                _fail(f"{what}: non-finite {k} after a training step")
        if out["skipped"] == 0 and not math.isfinite(out["history_loss"]):
            _fail(f"{what}: a non-finite loss {out['history_loss']} was neither raised nor skipped")


def _fuzz_model():
    _per_cell("model", model_cases, run_model_case)


# ---------------------------------------------------------------------------
# The bindings: _core.forward_* / backward_*, one element of a captured call
# mutated at a time
# ---------------------------------------------------------------------------
#
#   forward(spec, x, weights, h0, c0, lengths, y, hn, cn, tape)
#   backward(spec, x, weights, h0, c0, lengths, tape, dy, dhn, dcn, dx,
#            dx_accumulate, dh0, dc0, grads, dh_seq)
#   spec = (kind, peephole, reset_after, reverse, batch_first, threads,
#           num_dirs, dir, hidden, delays, periods, step0)
#   weights / grads = (w_ih, w_hh or [w_hh per delay], b_ih, b_hh, w_ch, alpha)
#   tape = (gates, hprev, c, extra)
# (tests/test_errors.py::test_private_binding_layout_is_known guards the layout.)

B_T, B_B, B_H = 4, 3, 6   # I = H, so that x, y, dy and dx can alias each other
FWD_NAMES = {1: "x", 3: "h0", 4: "c0", 5: "lengths", 6: "y", 7: "hn", 8: "cn"}
BWD_NAMES = {1: "x", 3: "h0", 4: "c0", 5: "lengths", 7: "dy", 8: "dhn", 9: "dcn", 10: "dx",
             12: "dh0", 13: "dc0", 15: "dh_seq"}
FWD_WRITTEN = {6, 7, 8, 9}
BWD_WRITTEN = {10, 12, 13, 14, 15}
FWD_REQUIRED = {1, 2, 6, 9}
BWD_REQUIRED = {1, 2, 6, 7, 14}
# output <- input pairs that may alias (same shape and dtype)
FWD_ALIAS = [((6,), (1,)), ((7,), (3,)), ((8,), (4,))]
BWD_ALIAS = [((10,), (7,)), ((10,), (1,)), ((12,), (8,)), ((13,), (9,))] + \
    [((14, k), (2, k)) for k in range(6)] + [((14, 1, q), (2, 1, q)) for q in range(3)]

ARRAY_HOWS = ["dtype_other_float", "dtype_int32", "dtype_int64", "dtype_f16", "dtype_bool",
              "dtype_complex", "dtype_object", "shape_last+1", "shape_first+1", "zero_axis",
              "ndim+1", "ndim-1", "fortran", "noncontig", "negstride", "bcast", "readonly", "none",
              "list", "str", "int", "nan", "inf", "huge", "alias"]
LENGTHS_HOWS = ["range_0", "range_T+1", "range_neg", "range_int32max", "all_1", "all_T",
                "dtype_int64", "dtype_float32", "shape_first+1", "ndim+1", "noncontig", "none", "list"]
INT_VALUES = [-2 ** 63, -2 ** 31, -1, 0, 1, 2, 3, 7, 64, 2 ** 31 - 1, 2 ** 31, 2 ** 63, 2 ** 64,
              "2", None, 1.5, True]


def _spec_mutations(spec, cell):
    """(path, how, expect) for the spec entries."""
    out = []
    kind, H = spec[0], spec[8]
    for v in INT_VALUES + [4, 5, 6]:
        exp = "maybe" if (isinstance(v, int) and 0 <= v <= 6) else "raise"
        out.append(((0, 0), {"set": v}, exp))
    for i in (1, 2, 3, 4):
        for v in (True, False, None, "x", 2, 1.5):
            out.append(((0, i), {"set": v}, "maybe"))
    for v in INT_VALUES:
        ok = isinstance(v, int) and -2 ** 31 <= v < 2 ** 31
        out.append(((0, 5), {"set": v}, "same_close" if ok else "raise"))
    for v in (-1, 0, 1, 2, 3, 2 ** 31, None):
        exp = "maybe" if v in (1, 2) and v is not True else "raise"
        out.append(((0, 6), {"set": v}, exp))
    for v in (-1, 0, 1, 2, 2 ** 31, None):
        exp = "maybe" if (v in (0, 1) and v < spec[6]) else "raise"
        out.append(((0, 7), {"set": v}, exp))
    for v in (0, -1, H - 1, H + 1, 2 * H, 2 ** 31 - 1, 2 ** 31, None):
        out.append(((0, 8), {"set": v}, "raise"))
    skip, clock = kind == 5, kind == 6
    for v in ([], [0], [-1], [1, 1], [3, 1], [1, 2 ** 31 - 1], [2 ** 31 - 1, 1], [1, 2 ** 30],
              [2 ** 31 - 1], [1, 2 ** 31], ["a"], None, 5, [1.5]):
        if skip:
            bad = (not isinstance(v, list) or not v or any(not isinstance(d, int) or isinstance(d, bool)
                                                          or d < 1 or d >= 2 ** 31 for d in v)
                   or len(set(v)) != len(v))
            exp = "raise" if bad else "maybe"
        else:
            exp = "maybe"
        out.append(((0, 9), {"set": v}, exp))
    for v in ([], [0], [2, 1], [1, 1, 1], [1, 2, 3], [3], [1, 2, 2 ** 31 - 1], [1, 2, 4, 8, 16, 32],
              [1, 2, 2 ** 31], [1, 4], None, ["a"]):
        if clock:
            bad = (not isinstance(v, list) or not v or any(not isinstance(p, int) or p < 1 or p >= 2 ** 31
                                                          for p in v)
                   or any(b <= a for a, b in zip(v, v[1:])) or H % len(v))
            exp = "raise" if bad else "maybe"
        else:
            exp = "maybe"
        out.append(((0, 10), {"set": v}, exp))
    step_vals = [-1, 2 ** 40, 2 ** 63 - 1, 2 ** 63, "3", None]
    for v in step_vals:
        if v is None or isinstance(v, str) or (isinstance(v, int) and v >= 2 ** 63):
            exp = "raise"
        elif clock and v < 0:
            exp = "raise"
        else:
            exp = "maybe"
        out.append(((0, 11), {"set": v}, exp))
    if clock:  # the same phase far along int64: the same answer, or an error
        lcm = math.lcm(*spec[10])
        for top in (2 ** 62, 2 ** 63 - 1 - B_T, 2 ** 63 - 1):
            v = spec[11] + (top - spec[11]) // lcm * lcm
            out.append(((0, 11), {"set": v}, "same_or_raise"))
    out += [((0,), {"slice": 11}, "raise"), ((0,), {"extend": 1}, "raise"), ((0,), "as_list", "raise"),
            ((0,), {"set": None}, "raise")]
    return out


def _leaf_paths(args, entry):
    """Paths of the array leaves of a captured call."""
    paths = []
    for i, v in enumerate(args):
        if isinstance(v, np.ndarray):
            paths.append((i,))
        elif isinstance(v, tuple) and i != 0:
            for k, e in enumerate(v):
                if isinstance(e, np.ndarray):
                    paths.append((i, k))
                elif isinstance(e, list):
                    paths += [(i, k, q) for q, m in enumerate(e) if isinstance(m, np.ndarray)]
    return paths


def binding_mutations(args, entry, cell):
    """Every (path, how, expect) for one captured call."""
    written = FWD_WRITTEN if entry == "forward" else BWD_WRITTEN
    required = FWD_REQUIRED if entry == "forward" else BWD_REQUIRED
    out = _spec_mutations(args[0], cell)
    for path in _leaf_paths(args, entry):
        top = path[0]
        is_written = top in written
        is_required = top in required and (len(path) == 1 or path[1] < 2 or top in (6, 9, 14))
        hows = LENGTHS_HOWS if (top == 5) else ARRAY_HOWS
        for how in hows:
            if how.startswith("range_") or how == "dtype_int64" and top == 5 or how == "dtype_float32":
                exp = "raise"
            elif how in ("all_1", "all_T"):
                exp = "maybe"
            elif how.startswith("dtype_") or how.startswith("shape_") or how.startswith("ndim") or \
                    how in ("zero_axis", "list", "str", "int"):
                exp = "raise"
            elif how in ("fortran", "noncontig", "negstride", "bcast"):
                exp = "layout"
            elif how == "readonly":
                exp = "raise" if is_written else "same"
            elif how == "none":
                exp = "raise" if is_required else "maybe"
            elif how in ("nan", "inf", "huge"):
                if is_written:
                    continue  # written arrays' old values do not matter (accumulated ones do, below)
                exp = "maybe"
            elif how == "alias":
                continue
            else:
                raise AssertionError(how)
            out.append((path, how, exp))
    pairs = FWD_ALIAS if entry == "forward" else BWD_ALIAS
    leaves = set(_leaf_paths(args, entry))
    for dst, src in pairs:
        if dst in leaves and src in leaves:
            a, b = _get(args, dst), _get(args, src)
            if a.shape == b.shape and a.dtype == b.dtype:
                out.append((dst, {"alias": list(src)}, "alias"))
    # tuples and other arguments
    for i, v in enumerate(args):
        if i == 0:
            continue
        if isinstance(v, tuple):
            req = entry == "backward" or i != 9
            out += [((i,), {"slice": len(v) - 1}, "raise"), ((i,), {"extend": 1}, "raise"),
                    ((i,), "as_list", "raise"), ((i,), {"set": 5}, "raise"),
                    ((i,), {"set": None}, "raise" if req else "maybe")]
            for k, e in enumerate(v):
                if isinstance(e, list):  # skip's per-delay matrices
                    out += [((i, k), {"slice": len(e) - 1}, "raise"), ((i, k), "as_tuple", "same"),
                            ((i, k), {"extend": 1}, "raise"), ((i, k), {"set": None}, "raise"),
                            ((i, k), "first_only", "raise")]
    if entry == "backward":
        for v in (True, False, None, "x", 2):
            out.append(((11,), {"set": v}, "maybe"))
        out.append(((15,), "dh_seq", "same_others"))
    # backward's last argument, dh_seq, has a default (None)
    out.append(((), "drop_last_arg", "raise" if entry == "forward" else "same"))
    out.append(((), "extra_arg", "raise"))
    return out


def _apply_array_how(a, how, T):
    if how == "dtype_other_float":
        return a.astype(np.float64 if a.dtype == np.float32 else np.float32)
    if how == "dtype_int32":
        return a.astype(np.int32) if a.dtype != np.int32 else a.astype(np.int64)
    if how == "dtype_int64":
        return a.astype(np.int64)
    if how == "dtype_float32":
        return a.astype(np.float32)
    if how == "dtype_f16":
        return a.astype(np.float16)
    if how == "dtype_bool":
        return a != 0
    if how == "dtype_complex":
        return a.astype(np.complex128)
    if how == "dtype_object":
        return a.astype(object)
    if how == "shape_last+1":
        return np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)
    if how == "shape_first+1":
        return np.zeros((a.shape[0] + 1,) + a.shape[1:], a.dtype)
    if how == "zero_axis":
        return np.zeros((0,) + a.shape[1:], a.dtype)
    if how == "ndim+1":
        return a[..., None].copy()
    if how == "ndim-1":
        return a.reshape(-1) if a.ndim >= 2 else np.asarray(a.ravel()[:1].sum(), a.dtype)
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "noncontig":
        return present(a, "noncontig", a.dtype)
    if how == "negstride":
        return present(a, "negstride", a.dtype)
    if how == "bcast":
        return present(a, "bcast", a.dtype)
    if how == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if how == "none":
        return None
    if how == "list":
        return a.tolist()
    if how == "str":
        return "array"
    if how == "int":
        return 3
    if how in ("nan", "inf", "huge"):
        r = a.copy()
        r.flat[:: max(1, r.size // 3)] = {"nan": np.nan, "inf": np.inf, "huge": 1e30}[how]
        return r
    if how.startswith("range_"):
        r = a.copy()
        r[-1] = {"range_0": 0, "range_T+1": T + 1, "range_neg": -5, "range_int32max": 2 ** 31 - 1}[how]
        return r
    if how == "all_1":
        return np.ones_like(a)
    if how == "all_T":
        return np.full_like(a, T)
    raise AssertionError(how)


def mutate(args, path, how, T):
    """The captured call with one element changed; (new args, note)."""
    args = _deep_copy(args)
    if how == "drop_last_arg":
        return args[:-1]
    if how == "extra_arg":
        return args + (None,)
    if isinstance(how, dict) and "set" in how:
        return _replace(args, path, how["set"])
    if isinstance(how, dict) and "slice" in how:
        return _replace(args, path, _get(args, path)[:how["slice"]])
    if isinstance(how, dict) and "extend" in how:
        v = _get(args, path)
        return _replace(args, path, type(v)(list(v) + [None] * how["extend"]))
    if isinstance(how, dict) and "alias" in how:
        return _replace(args, path, _get(args, tuple(how["alias"])))
    if how == "as_list":
        return _replace(args, path, list(_get(args, path)))
    if how == "as_tuple":
        return _replace(args, path, tuple(_get(args, path)))
    if how == "first_only":
        return _replace(args, path, _get(args, path)[0])
    if how == "dh_seq":
        dy = args[7]
        return _replace(args, path, np.zeros(dy.shape, dy.dtype))
    return _replace(args, path, _apply_array_how(_get(args, path), how, T))


def _outputs(args, entry):
    """The arrays a call writes, by path (copies)."""
    written = FWD_WRITTEN if entry == "forward" else BWD_WRITTEN
    return {p: _get(args, p).copy() for p in _leaf_paths(args, entry) if p[0] in written}


_CAPTURED = {}


def capture_binding_call(cell, dtype, bidir, batch_first, variant):
    """(forward args, backward args) of the last direction of a real layer call."""
    key = (cell, dtype, bidir, batch_first, variant)
    if key in _CAPTURED:
        return _CAPTURED[key]
    from rnncore import layers as layers_mod
    real = layers_mod._core
    seen = {}

    class Recorder:
        def __getattr__(self, name):
            fn = getattr(real, name)
            if not name.startswith(("forward_", "backward_")):
                return fn

            def record(*args):
                r = fn(*args)
                seen[name.split("_")[0]] = _deep_copy(args)  # the last call, as it was made
                return r
            return record

    periods = [1, 2, 3]
    c = {"cell": cell, "I": B_H, "H": B_H, "L": 1, "bias": True, "batch_first": batch_first,
         "bidirectional": bidir, "dtype": dtype, "seed": 7, "delays": [1, 3], "periods": periods,
         "leaky": "alpha", "T": B_T, "B": B_B, "step": 5}
    layer = _make_layer(c)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (B_B, B_T, B_H) if batch_first else (B_T, B_B, B_H)).astype(dtype)
    state = _map_state(_state_arrays(c, rng), lambda a: a.astype(dtype))
    layers_mod._core = Recorder()
    try:
        y, st, tape = layer.forward(x, state=state, lengths=[B_T, 2, 1])
        layer.backward(tape, np.ones_like(y), dstate=state)
    finally:
        layers_mod._core = real
    fwd, bwd = seen["forward"], seen["backward"]
    if variant == "minimal":  # every optional argument None
        fwd = tuple(None if i in (3, 4, 5, 7, 8, 9) else v for i, v in enumerate(fwd))
        bwd = tuple(None if i in (3, 4, 5, 8, 9, 10, 12, 13) else v for i, v in enumerate(bwd))
    _CAPTURED[key] = (fwd, bwd)
    return fwd, bwd


def binding_cases(cell):
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        c = {"cell": cell,
             "dtype": draw(st.sampled_from(["float32", "float64"])),
             "bidir": draw(st.booleans()), "batch_first": draw(st.booleans()),
             "variant": draw(st.sampled_from(["full", "full", "minimal"])),
             "entry": draw(st.sampled_from(["forward", "backward"])),
             "force_team": draw(st.booleans())}
        fwd, bwd = capture_binding_call(c["cell"], c["dtype"], c["bidir"], c["batch_first"], c["variant"])
        args = fwd if c["entry"] == "forward" else bwd
        muts = binding_mutations(args, c["entry"], c["cell"])
        c["batch"] = [list(m[:2]) for m in draw(st.lists(st.sampled_from(muts), min_size=1, max_size=12))]
        for m in c["batch"]:
            m[0] = list(m[0])
        return c

    return strat()


def _tol_equal(a, b, what, close):
    if close:
        np.testing.assert_allclose(a, b, rtol=1e-5 if a.dtype == np.float32 else 1e-12,
                                   atol=1e-6 if a.dtype == np.float32 else 1e-13, err_msg=what)
    else:
        _eq(a, b, what)


def run_binding_case(c: dict) -> None:
    from rnncore import _core
    _set_runtime({"threads": 2, "force_team": c["force_team"]})
    fwd, bwd = capture_binding_call(c["cell"], c["dtype"], c["bidir"], c["batch_first"], c["variant"])
    args0 = fwd if c["entry"] == "forward" else bwd
    suffix = "f32" if c["dtype"] == "float32" else "f64"
    fn = getattr(_core, f"{c['entry']}_{suffix}")
    table = {(tuple(p), json.dumps(h, default=repr)): e
             for p, h, e in binding_mutations(args0, c["entry"], c["cell"])}
    base_args = _deep_copy(args0)
    fn(*base_args)
    base = _outputs(base_args, c["entry"])
    for path, how in c["batch"]:
        path = tuple(path)
        expect = table[(path, json.dumps(how, default=repr))]
        names = FWD_NAMES if c["entry"] == "forward" else BWD_NAMES
        label = names.get(path[0]) if path else None
        label = label or {0: "spec", 2: "weights", 14: "grads", 11: "dx_accumulate"}.get(path[0] if path else -1) \
            or ("tape" if path and path[0] == (9 if c["entry"] == "forward" else 6) else "")
        what = (f"_core.{c['entry']}_{suffix}[{c['cell']}, {c['variant']}] arg{list(path)} ({label}) "
                f"<- {how!r}")
        args = mutate(args0, path, how, B_T)
        if expect == "layout":  # same values: a C-contiguous view is the same call, others are errors
            v = _get(args, path)
            expect = "same" if v.flags.c_contiguous and (v.flags.writeable or path[0] not in
                                                         (FWD_WRITTEN if c["entry"] == "forward" else BWD_WRITTEN)) else "raise"
        expected_out = base
        if expect == "alias":  # the non-aliased call with the output buffer holding the input
            ref_args = _deep_copy(args0)
            ref_args = _replace(ref_args, path, _get(ref_args, tuple(how["alias"])).copy())
            fn(*ref_args)
            expected_out = _outputs(ref_args, c["entry"])
        _case("binding", dict(c, batch=[[list(path), how]]))
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            if expect in ("same", "same_close", "same_others"):
                _fail(f"{what}: an equivalent call was rejected: {type(e).__name__}: {e}")
            _check_raised(e, what)
            _COUNTS["raised"] += 1
            continue
        _COUNTS["returned"] += 1
        if expect == "raise":
            _fail(f"{what}: accepted silently")
        if expect in ("same", "same_close", "same_or_raise", "alias", "same_others"):
            got = _outputs(args, c["entry"]) if args and len(args) == len(args0) else {}
            for p, v in expected_out.items():
                if p not in got or (expect == "same_others" and p == path):
                    continue
                if expect == "alias" and c["entry"] == "forward" and p[0] == 9:
                    continue  # the tape's rows past a length are not part of the contract
                _tol_equal(got[p], v, f"{what}: output arg{list(p)} differs from the "
                           + ("non-aliased call" if expect == "alias" else "unmutated call"),
                           close=expect == "same_close")


def _fuzz_binding():
    _per_cell("binding", binding_cases, run_binding_case)


# ---------------------------------------------------------------------------
# The bindings: _core.gemm_* (c = alpha op(a) op(b) + beta c)
# ---------------------------------------------------------------------------

def gemm_cases():
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        big = draw(st.sampled_from([False] * 5 + [True]))
        dim = st.integers(128, 300) if big else st.sampled_from([0, 1, 1, 2, 3, 5, 8, 17, 33])
        c = {"m": draw(dim), "n": draw(dim), "k": draw(dim) if not big else draw(st.integers(32, 64)),
             "ta": draw(st.booleans()), "tb": draw(st.booleans()),
             "alpha": draw(st.sampled_from([1.0, 0.0, -0.5, 2.0])),
             "beta": draw(st.sampled_from([0.0, 1.0, 0.5])),
             "dtype": draw(st.sampled_from(["float32", "float64"])),
             "threads": draw(st.sampled_from([1, 2, 3, 16])),
             "force_team": draw(st.booleans()),
             "seed": draw(st.integers(0, 2 ** 32 - 1))}
        c["mut"] = draw(st.sampled_from(GEMM_MUTS))
        return c

    return strat()


GEMM_MUTS = [None] * 6 + [
    (3, "dtype_other_float"), (4, "dtype_int32"), (6, "dtype_other_float"), (3, "dtype_complex"),
    (3, "shape_last+1"), (4, "shape_first+1"), (6, "shape_last+1"), (6, "shape_first+1"),
    (3, "ndim+1"), (6, "ndim-1"), (3, "fortran"), (4, "noncontig"), (6, "negstride"),
    (6, "fortran"), (6, "bcast"), (3, "bcast"), (6, "readonly"), (3, "readonly"), (3, "none"),
    (6, "none"), (3, "list"), (6, "list"), (4, "str"), (3, "nan"), (4, "inf"),
    (0, {"set": 1}), (0, {"set": "yes"}), (0, {"set": None}), (2, {"set": float("nan")}),
    (2, {"set": float("inf")}), (2, {"set": 1e300}), (2, {"set": "1"}), (5, {"set": None}),
    (7, {"set": 0}), (7, {"set": -1}), (7, {"set": 2 ** 31 - 1}), (7, {"set": 2 ** 31}),
    (7, {"set": "2"}), ((), "drop_last_arg"), ((), "extra_arg"),
    (6, {"alias": 3}), (6, {"alias": 4}),
]


def run_gemm_case(c: dict) -> None:
    from rnncore import _core
    _set_runtime({"threads": 1, "force_team": c["force_team"]})
    dt = np.dtype(c["dtype"])
    rng = np.random.default_rng(c["seed"])
    m, n, k = c["m"], c["n"], c["k"]
    a = rng.uniform(-1, 1, (k, m) if c["ta"] else (m, k)).astype(dt)
    b = rng.uniform(-1, 1, (n, k) if c["tb"] else (k, n)).astype(dt)
    cc = rng.uniform(-1, 1, (m, n)).astype(dt)
    fn = _core.gemm_f32 if dt == np.float32 else _core.gemm_f64
    args = (c["ta"], c["tb"], c["alpha"], a, b, c["beta"], cc, c["threads"])
    mut = c["mut"]
    expect = "valid"
    if mut is not None:
        pos, how = mut
        if how == "drop_last_arg":
            args, expect = args[:-1], "raise"
        elif how == "extra_arg":
            args, expect = args + (1,), "raise"
        elif isinstance(how, dict) and "alias" in how:
            src = args[how["alias"]]
            if src.shape != cc.shape:
                return
            cc = src
            args = _replace(args, (6,), src)
            expect = "alias"
        elif isinstance(how, dict):
            v = how["set"]
            args = _replace(args, (pos,), v)
            if pos in (0, 1):
                expect = "maybe"
            elif pos in (2, 5):
                expect = "valid" if isinstance(v, float) else "raise"
            elif pos == 7:
                expect = "valid" if isinstance(v, int) and -2 ** 31 <= v < 2 ** 31 else "raise"
        else:
            v = _apply_array_how(args[pos], how, 0)
            args = _replace(args, (pos,), v)
            if how in ("fortran", "noncontig", "negstride", "bcast"):
                expect = "valid" if v.flags.c_contiguous and (pos != 6 or v.flags.writeable) else "raise"
            elif how == "readonly":
                expect = "raise" if pos == 6 else "valid"
            elif how in ("nan", "inf"):
                expect = "valid"
            else:
                expect = "raise"
    what = f"_core.gemm_{c['dtype'][5:]}(m={m}, n={n}, k={k}, ta={c['ta']}, tb={c['tb']}) mutation {mut!r}"
    A, Bm = (args[3], args[4]) if len(args) > 4 else (a, b)
    want = None
    if expect in ("valid", "alias") and isinstance(A, np.ndarray) and isinstance(Bm, np.ndarray):
        alpha = float(args[2]) if isinstance(args[2], (int, float)) else c["alpha"]
        beta = float(args[5]) if isinstance(args[5], (int, float)) else c["beta"]
        opa = (A.T if c["ta"] else A).astype(np.float64)
        opb = (Bm.T if c["tb"] else Bm).astype(np.float64)
        with np.errstate(all="ignore"):
            # alpha = 0 or k = 0: op(a) op(b) is not computed (BLAS semantics)
            want = alpha * (opa @ opb) if (k and alpha != 0.0) else np.zeros((m, n))
            if beta != 0.0:  # BLAS: beta = 0 ignores c, NaN included
                want = want + beta * np.asarray(args[6], np.float64)
    _case("gemm", c)
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        if expect == "valid":
            _fail(f"{what}: valid call rejected: {type(e).__name__}: {e}")
        _check_raised(e, what)
        _COUNTS["raised"] += 1
        return
    _COUNTS["returned"] += 1
    if expect == "raise":
        _fail(f"{what}: accepted silently")
    if want is not None:
        with np.errstate(all="ignore"):
            want = want.astype(dt).astype(np.float64)  # what the dtype can hold (overflow: inf)
        got = np.asarray(args[6], np.float64)
        rtol, atol = (1e-4, 1e-4) if dt == np.float32 else (1e-10, 1e-10)
        if not np.all(np.isfinite(want)):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what + ": NaN positions")
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=what + ": +inf")
            np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=what + ": -inf")
            fin = np.isfinite(want)
            np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=atol * max(1, k), err_msg=what)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(1, k),
                                       err_msg=what + (": c aliasing an operand must be refused or give "
                                                       "the product of the original operands"
                                                       if expect == "alias" else ""))


GEMM_EXPLICIT = [  # c aliasing a: refused, or the product of the original operands
    {"m": 3, "n": 3, "k": 3, "ta": False, "tb": False, "alpha": 1.0, "beta": 0.0, "dtype": "float32",
     "threads": 1, "force_team": False, "seed": 0, "mut": (6, {"alias": 3})},
    {"m": 200, "n": 40, "k": 40, "ta": False, "tb": True, "alpha": 1.0, "beta": 1.0, "dtype": "float64",
     "threads": 2, "force_team": True, "seed": 0, "mut": None},
]


def _fuzz_gemm():
    from hypothesis import example, given

    @_settings("gemm")
    @example(GEMM_EXPLICIT[0])
    @example(GEMM_EXPLICIT[1])
    @given(gemm_cases())
    def fuzz(c):
        _COUNTS["examples"] += 1
        _guarded("gemm", run_gemm_case, c)
    fuzz()


# ---------------------------------------------------------------------------
# Sizes that cannot be allocated
# ---------------------------------------------------------------------------

def _huge_cases():
    """name -> callable; each must raise MemoryError or ValueError (or the
    named accepted exception), or return a correct result."""
    import rnncore as rc
    from rnncore import _core
    f32 = np.float32
    cases = {}
    for cls in ("LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN"):
        cases[f"{cls}(3, hidden_size=10**9)"] = lambda cls=cls: getattr(rc, cls)(3, 10 ** 9)
        cases[f"{cls}(input_size=10**12, 4)"] = lambda cls=cls: getattr(rc, cls)(10 ** 12, 4)
        cases[f"{cls}(3, hidden_size=2**62)"] = lambda cls=cls: getattr(rc, cls)(3, 2 ** 62)
    cases["ClockworkRNN(3, 10**9, periods=(1,))"] = lambda: rc.ClockworkRNN(3, 10 ** 9, periods=(1,))
    cases["Linear(10**12, 3)"] = lambda: rc.Linear(10 ** 12, 3)
    small = {"lstm": lambda: rc.LSTM(3, 4), "gru": lambda: rc.GRU(3, 4), "skip": lambda: rc.SkipRNN(3, 4)}
    for name, make in small.items():
        cases[f"{name}(x broadcast (10**6, 10**5, 3))"] = \
            lambda make=make: make()(np.broadcast_to(f32(1), (10 ** 6, 10 ** 5, 3)))
        cases[f"{name}(x broadcast (1, 10**9, 3): B = 10**9)"] = \
            lambda make=make: make()(np.broadcast_to(f32(1), (1, 10 ** 9, 3)))
        cases[f"{name}(x broadcast (2**31, 1, 3): T = 2**31)"] = \
            lambda make=make: make()(np.broadcast_to(f32(1), (2 ** 31, 1, 3)))
        cases[f"{name}.forward(x broadcast (10**8, 8, 3))"] = \
            lambda make=make: make().forward(np.broadcast_to(f32(1), (10 ** 8, 8, 3)))
    x = np.ones((3, 1, 1), f32)
    cases["SkipRNN(1, 1, delays=(1, 10**9))(x)"] = lambda: rc.SkipRNN(1, 1, delays=(1, 10 ** 9))(x)
    cases["SkipRNN(1, 1, delays=(1, 2**31 - 1))(x)"] = lambda: rc.SkipRNN(1, 1, delays=(1, 2 ** 31 - 1))(x)
    cases["SkipRNN(1, 1, delays=(1, 2**31))(x)"] = lambda: rc.SkipRNN(1, 1, delays=(1, 2 ** 31))(x)
    cases["SkipRNN(1, 1, delays=(1, 2**40)).forward(x)"] = \
        lambda: rc.SkipRNN(1, 1, delays=(1, 2 ** 40)).forward(x)
    cases["ClockworkRNN(1, 2, periods=(1, 2**31))(x)"] = \
        lambda: rc.ClockworkRNN(1, 2, periods=(1, 2 ** 31))(x)
    X = np.ones((4, 3, 2), f32)
    model = rc.Sequential(rc.GRU(2, 3), rc.Linear(3, 1))
    cases["Sequential.predict(batch_size=10**18)"] = lambda: model.predict(X, batch_size=10 ** 18)
    cases["Sequential.fit(batch_size=10**18)"] = \
        lambda: model.fit(X, np.ones((4, 1), f32), batch_size=10 ** 18, progress=False)
    cases["Sequential.predict(X broadcast (10**9, 10**3, 2))"] = \
        lambda: model.predict(np.broadcast_to(f32(1), (10 ** 9, 10 ** 3, 2)))

    # the bindings, with every optional argument None: nothing in Python
    # allocates the (max_delay, B, H) history, the core must size it itself
    for cell in ("skip",):
        for dtype in ("float32", "float64"):
            fwd, bwd = capture_binding_call(cell, dtype, False, False, "minimal")
            sfx = dtype[5:]
            for d in ([1, 2 ** 31 - 1], [2 ** 31 - 1, 1], [1, 2 ** 30]):
                for entry, args in (("forward", fwd), ("backward", bwd)):
                    cases[f"_core.{entry}_f{sfx}(skip, delays={d}, no state)"] = \
                        lambda entry=entry, args=args, d=d, sfx=sfx: _skip_long_delay(entry, args, d, sfx)
    return cases


def _skip_long_delay(entry, args, delays, sfx):
    """A delay longer than the sequence, with no initial history, reads only
    zeros: the call must give what it gives with a delay of T + 1 (or raise)."""
    from rnncore import _core
    fn = getattr(_core, f"{entry}_f{sfx}")

    def call(ds):
        a = _deep_copy(args)
        spec = list(a[0])
        spec[9] = ds
        a = _replace(a, (0,), tuple(spec))
        fn(*a)
        return _outputs(a, entry)

    got = call(delays)
    want = call([d if d <= B_T else B_T + 1 for d in delays])
    for p, v in want.items():
        _eq(got[p], v, f"_core.{entry}_f{sfx}(skip, delays={delays}): output arg{list(p)} differs "
                       f"from the same call with the long delay cut to T + 1")


def _peak_rss_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _fuzz_huge(start: int = 0):
    failures = []
    for i, (name, fn) in enumerate(_huge_cases().items()):
        if i < start:
            continue
        _case("huge", {"index": i, "name": name})
        try:
            fn()
        except AssertionError as e:  # a wrong answer: reported with the others at the end
            failures.append(f"{name}: {e}")
            continue
        except Exception as e:  # noqa: BLE001
            if not isinstance(e, (MemoryError, ValueError, OverflowError, TypeError)):
                _fail(f"{name}: raised {type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e)))
            _COUNTS["examples"] += 1
            continue
        _COUNTS["examples"] += 1
    if failures:
        _fail("\n".join(failures))


def _fuzz_huge_rss():
    """A layer whose parameters cannot exist must say so before filling memory:
    building hidden_size=10**9 first fills a 24 GB float64 weight_ih (and is
    OOM-killed on a 23 GB machine) before failing on weight_hh."""
    import rnncore as rc
    if not _peak_rss_reset():
        print("DONE skipped (no /proc/self/clear_refs)")
        return
    failures = []
    for cls in ("LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN", "ClockworkRNN"):
        for I, H in ((1, 10 ** 7), (3, 10 ** 9)):
            name = f"rc.{cls}({I}, {H})"
            kw = {"periods": (1,)} if cls == "ClockworkRNN" else {}
            _case("huge_rss", {"name": name})
            _peak_rss_reset()
            before = _current_rss_mb()
            try:
                getattr(rc, cls)(I, H, **kw)
            except (MemoryError, ValueError, OverflowError) as e:
                grew = _peak_rss_mb() - before
                if grew > 64:
                    failures.append(f"{name} raised {type(e).__name__} only after its memory peaked "
                                    f"{grew:.0f} MB higher (the parameters' total size is known "
                                    f"before any of them is allocated): {e}")
            else:
                failures.append(f"{name} was built")
            _COUNTS["examples"] += 1
    if failures:
        _fail("\n".join(failures))


# ---------------------------------------------------------------------------
# Child process entry
# ---------------------------------------------------------------------------

def run_huge_case(c: dict) -> None:
    try:
        _huge_cases()[c["name"]]()
    except (MemoryError, ValueError, OverflowError, TypeError) as e:
        print(f"raised {type(e).__name__}: {e}")


FUZZ = {"layer": (_fuzz_layer, run_layer_case), "model": (_fuzz_model, run_model_case),
        "binding": (_fuzz_binding, run_binding_case), "gemm": (_fuzz_gemm, run_gemm_case),
        "huge": (_fuzz_huge, run_huge_case), "huge_rss": (_fuzz_huge_rss, None)}


def _under_asan() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def _child_setup():
    import faulthandler
    import resource
    faulthandler.enable()  # a crash prints the Python stack too
    if not _under_asan():
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = CHILD_AS_LIMIT if hard == resource.RLIM_INFINITY else min(CHILD_AS_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    import rnncore  # noqa: F401
    from rnncore import _core
    _DEFAULT_MIN_WORK[0] = _core.min_work_per_thread()


def _child_main(name: str, *extra: str) -> int:
    _child_setup()
    t0 = time.perf_counter()

    def counts():
        return (f"examples={_COUNTS['examples']} calls={_COUNTS['cases']} "
                f"(returned {_COUNTS['returned']}, raised {_COUNTS['raised']}) "
                f"time={time.perf_counter() - t0:.1f}s")
    try:
        FUZZ[name][0](*(int(e) for e in extra))
    except BaseException:  # noqa: BLE001 - reported to the parent
        sys.stdout.flush()
        traceback.print_exc()
        print(f"COUNTS {counts()}", file=sys.stderr, flush=True)
        return 1
    if _FAILURES:
        for (cell, _), (case, msg) in _FAILURES.items():
            print(f"\n=== failure ({cell}); replay with --replay {name} '<case>':\n{case}\n{msg}",
                  file=sys.stderr)
        print(f"\n{len(_FAILURES)} distinct failure(s); COUNTS {counts()}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    print(f"DONE {counts()}", flush=True)
    return 0


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--fuzz-child":
    sys.exit(_child_main(sys.argv[2], *sys.argv[3:]))

if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "--replay":
    _child_setup()
    case = json.loads(sys.argv[3])
    case.pop("kind", None)
    FUZZ[sys.argv[2]][1](case)
    print("case passed")
