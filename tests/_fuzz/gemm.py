"""Fuzzing the private binding _core.gemm_*."""
from __future__ import annotations

import numpy as np
from _numeric import replace_path as _replace

from .bindings import _apply_array_how
from .common import _COUNTS, _case, _check_raised, _fail, _guarded, _settings
from .layers import _set_runtime

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

