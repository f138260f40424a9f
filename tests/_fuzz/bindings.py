"""Fuzzing the private bindings _core.forward_* / backward_*: one element of a
captured valid call mutated at a time."""
from __future__ import annotations

import json
import math

import numpy as np
from _helpers import binding_arg_names
from _numeric import deep_copy as _deep_copy
from _numeric import delete_path as _delete
from _numeric import get_path as _get
from _numeric import replace_path as _replace

from .common import _COUNTS, _case, _check_raised, _eq, _fail, present
from .layers import _make_layer, _map_state, _per_cell, _set_runtime, _state_arrays

# ---------------------------------------------------------------------------
# The bindings: _core.forward_* / backward_*, one element of a captured call
# mutated at a time
# ---------------------------------------------------------------------------
#
#   forward(spec, x, weights, h0, c0, lengths, y, hn, cn, tape, threads, step0)
#   backward(spec, x, weights, h0, c0, lengths, tape, dy, dhn, dcn, dx,
#            dx_accumulate, dh0, dc0, grads, dh_seq, threads, step0)
#   spec = CellSpec(kind, hidden, num_dirs, dir, reverse, batch_first,
#                   peephole, reset_after, relu, delays, periods)
#   weights / grads = {weight_ih, weight_hh (skip: [one per delay]), bias_ih, bias_hh, weight_ch, alpha}
#   tape = {gates, hprev, c, extra}
# A captured call is its keyword arguments, the CellSpec as its fields (made
# into a CellSpec inside the case, so that a broken field is the case's error).
# (tests/test_errors.py::test_private_binding_layout_is_known guards the layout.)

B_T, B_B, B_H = 4, 3, 6   # I = H, so that x, y, dy and dx can alias each other
FWD_WRITTEN = {"y", "hn", "cn", "tape"}
BWD_WRITTEN = {"dx", "dh0", "dc0", "grads", "dh_seq"}
FWD_REQUIRED = {"x", "weights", "y", "tape"}
BWD_REQUIRED = {"x", "weights", "tape", "dy", "grads"}
_W_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ch", "alpha")
# output <- input pairs that may alias (same shape and dtype)
FWD_ALIAS = [(("y",), ("x",)), (("hn",), ("h0",)), (("cn",), ("c0",))]
BWD_ALIAS = [(("dx",), ("dy",)), (("dx",), ("x",)), (("dh0",), ("dhn",)), (("dc0",), ("dcn",))] + \
    [(("grads", k), ("weights", k)) for k in _W_NAMES] + \
    [(("grads", "weight_hh", q), ("weights", "weight_hh", q)) for q in range(3)]

ARRAY_HOWS = ["dtype_other_float", "dtype_int32", "dtype_int64", "dtype_f16", "dtype_bool",
              "dtype_complex", "dtype_object", "shape_last+1", "shape_first+1", "zero_axis",
              "ndim+1", "ndim-1", "fortran", "noncontig", "negstride", "bcast", "readonly", "none",
              "list", "str", "int", "nan", "inf", "huge", "alias"]
LENGTHS_HOWS = ["range_0", "range_T+1", "range_neg", "range_int32max", "all_1", "all_T",
                "dtype_int64", "dtype_float32", "shape_first+1", "ndim+1", "noncontig", "none", "list"]
INT_VALUES = [-2 ** 63, -2 ** 31, -1, 0, 1, 2, 3, 7, 64, 2 ** 31 - 1, 2 ** 31, 2 ** 63, 2 ** 64,
              "2", None, 1.5, True]


def _is_int(v, lo=-2 ** 31, hi=2 ** 31 - 1):
    """v an int (not a bool) in [lo, hi], as the bindings take ints."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _int_list_bad(v):
    """v not a list of int32 values: the bindings refuse it for every cell."""
    return not isinstance(v, list) or any(not _is_int(e) for e in v)


def _spec_mutations(args, cell):
    """(path, how, expect) for the spec's fields and the call's threads and step0."""
    from rnncore import _core
    spec = args["spec"]
    out = []
    kind, H = spec["kind"], spec["hidden"]
    for v in INT_VALUES:
        out.append((("spec", "kind"), {"set": v}, "raise"))
    for name in _core.CellKind.__members__:  # by name, so that a case is JSON
        out.append((("spec", "kind"), {"set_kind": name}, "maybe"))
    for key in ("peephole", "reset_after", "reverse", "batch_first", "relu"):
        for v in (True, False, None, "x", 2, 1.5):
            out.append((("spec", key), {"set": v}, "maybe" if isinstance(v, bool) else "raise"))
    for v in INT_VALUES:
        out.append((("threads",), {"set": v}, "same_close" if _is_int(v) else "raise"))
    out.append((("threads",), "del", "same_close"))  # the default, 1
    for v in (-1, 0, 1, 2, 3, 2 ** 31, None):
        out.append((("spec", "num_dirs"), {"set": v}, "maybe" if v in (1, 2) else "raise"))
    for v in (-1, 0, 1, 2, 2 ** 31, None):
        exp = "maybe" if (v in (0, 1) and v < spec["num_dirs"]) else "raise"
        out.append((("spec", "dir"), {"set": v}, exp))
    for v in (0, -1, H - 1, H + 1, 2 * H, 2 ** 31 - 1, 2 ** 31, None):
        out.append((("spec", "hidden"), {"set": v}, "raise"))
    skip, clock = kind == _core.CellKind.skip, kind == _core.CellKind.clockwork
    for v in ([], [0], [-1], [1, 1], [3, 1], [1, 2 ** 31 - 1], [2 ** 31 - 1, 1], [1, 2 ** 30],
              [2 ** 31 - 1], [1, 2 ** 31], ["a"], None, 5, [1.5]):
        if _int_list_bad(v) or (skip and (not v or any(d < 1 for d in v) or len(set(v)) != len(v))):
            exp = "raise"
        else:
            exp = "maybe"
        out.append((("spec", "delays"), {"set": v}, exp))
    for v in ([], [0], [2, 1], [1, 1, 1], [1, 2, 3], [3], [1, 2, 2 ** 31 - 1], [1, 2, 4, 8, 16, 32],
              [1, 2, 2 ** 31], [1, 4], None, ["a"]):
        if _int_list_bad(v) or (clock and (not v or any(p < 1 for p in v)
                                           or any(b <= a for a, b in zip(v, v[1:])) or H % len(v))):
            exp = "raise"
        else:
            exp = "maybe"
        out.append((("spec", "periods"), {"set": v}, exp))
    for v in [-1, 2 ** 40, 2 ** 62, 2 ** 62 + 1, 2 ** 63 - 1, 2 ** 63, "3", None, True]:
        out.append((("step0",), {"set": v}, "maybe" if _is_int(v, 0, 2 ** 62) else "raise"))
    if clock:  # the same phase far along int64: the same answer, or an error
        lcm = math.lcm(*spec["periods"])
        for top in (2 ** 62, 2 ** 63 - 1 - B_T, 2 ** 63 - 1):
            v = args["step0"] + (top - args["step0"]) // lcm * lcm
            out.append((("step0",), {"set": v}, "same_or_raise"))
    out += [(("spec", "hidden"), "del", "raise"), (("spec", "bogus"), {"set": 1}, "raise"),
            (("spec",), "as_tuple", "raise"), (("spec",), {"set": None}, "raise")]
    return out


def _leaf_paths(args, entry):
    """Paths of the array leaves of a captured call."""
    paths = []
    for name, v in args.items():
        if isinstance(v, np.ndarray):
            paths.append((name,))
        elif isinstance(v, dict) and name != "spec":
            for k, e in v.items():
                if isinstance(e, np.ndarray):
                    paths.append((name, k))
                elif isinstance(e, list):
                    paths += [(name, k, q) for q, m in enumerate(e) if isinstance(m, np.ndarray)]
    return paths


def binding_mutations(args, entry, cell):
    """Every (path, how, expect) for one captured call."""
    written = FWD_WRITTEN if entry == "forward" else BWD_WRITTEN
    required = FWD_REQUIRED if entry == "forward" else BWD_REQUIRED
    out = _spec_mutations(args, cell)
    for path in _leaf_paths(args, entry):
        top = path[0]
        is_written = top in written
        is_required = top in required and (len(path) == 1 or top in ("tape", "grads")
                                           or path[1] in ("weight_ih", "weight_hh"))
        hows = LENGTHS_HOWS if top == "lengths" else ARRAY_HOWS
        for how in hows:
            if how.startswith("range_") or how == "dtype_int64" and top == "lengths" or how == "dtype_float32":
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
    # the dict arguments: weights, grads, tape
    for name, v in args.items():
        if name == "spec" or not isinstance(v, dict):
            continue
        req = entry == "backward" or name != "tape"
        out += [((name,), "as_tuple", "raise"), ((name,), {"set": 5}, "raise"),
                ((name,), {"set": None}, "raise" if req else "maybe"),
                ((name, "bogus"), {"set": None}, "raise"), ((name, 1), {"set": None}, "raise")]
        for k, e in v.items():
            needed = name in ("tape", "grads") or k in ("weight_ih", "weight_hh")
            out.append(((name, k), "del", "raise" if needed else "maybe"))
            if isinstance(e, list):  # skip's per-delay matrices
                out += [((name, k), {"slice": len(e) - 1}, "raise"), ((name, k), "as_tuple", "same"),
                        ((name, k), {"extend": 1}, "raise"), ((name, k), {"set": None}, "raise"),
                        ((name, k), "first_only", "raise")]
    if entry == "backward":
        for v in (True, False, None, "x", 2):
            out.append((("dx_accumulate",), {"set": v}, "maybe" if isinstance(v, bool) else "raise"))
        out.append((("dh_seq",), "dh_seq", "same_others"))
        out.append((("dh_seq",), "del", "same"))  # the default, None
    out.append((("x",), "del", "raise"))
    out.append((("bogus",), {"set": None}, "raise"))
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
    """The captured call with one element changed."""
    args = _deep_copy(args)
    if how == "del":
        return _delete(args, path)
    if isinstance(how, dict) and "set" in how:
        return _replace(args, path, how["set"])
    if isinstance(how, dict) and "set_kind" in how:
        from rnncore import _core
        return _replace(args, path, _core.CellKind.__members__[how["set_kind"]])
    if isinstance(how, dict) and "slice" in how:
        return _replace(args, path, _get(args, path)[:how["slice"]])
    if isinstance(how, dict) and "extend" in how:
        v = _get(args, path)
        return _replace(args, path, type(v)(list(v) + [None] * how["extend"]))
    if isinstance(how, dict) and "alias" in how:
        return _replace(args, path, _get(args, tuple(how["alias"])))
    if how == "as_tuple":
        v = _get(args, path)
        return _replace(args, path, tuple(v.values()) if isinstance(v, dict) else tuple(v))
    if how == "first_only":
        return _replace(args, path, _get(args, path)[0])
    if how == "dh_seq":
        dy = args["dy"]
        return _replace(args, path, np.zeros(dy.shape, dy.dtype))
    return _replace(args, path, _apply_array_how(_get(args, path), how, T))


def call(fn, args):
    """fn(**args) with the spec's fields made into a CellSpec first (which may raise)."""
    from rnncore import _core
    if isinstance(args.get("spec"), dict):
        args = {**args, "spec": _core.CellSpec(**args["spec"])}
    return fn(**args)


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

            def record(*args, **kwargs):
                names = binding_arg_names(fn)  # layers.py passes them in order
                assert len(args) <= len(names), (name, len(args), names)
                kwargs = {**dict(zip(names, args)), **kwargs}
                r = fn(**kwargs)  # the last call, as it was made:
                seen[name.split("_")[0]] = _deep_copy({**kwargs, "spec": kwargs["spec"].fields()})
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
        fwd = {k: None if k in ("h0", "c0", "lengths", "hn", "cn", "tape") else v for k, v in fwd.items()}
        bwd = {k: None if k in ("h0", "c0", "lengths", "dhn", "dcn", "dx", "dh0", "dc0") else v
               for k, v in bwd.items()}
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
    call(fn, base_args)
    base = _outputs(base_args, c["entry"])
    for path, how in c["batch"]:
        path = tuple(path)
        expect = table[(path, json.dumps(how, default=repr))]
        what = f"_core.{c['entry']}_{suffix}[{c['cell']}, {c['variant']}] {list(path)} <- {how!r}"
        args = mutate(args0, path, how, B_T)
        if expect == "layout":  # same values: a C-contiguous view is the same call, others are errors
            v = _get(args, path)
            expect = "same" if v.flags.c_contiguous and (v.flags.writeable or path[0] not in
                                                         (FWD_WRITTEN if c["entry"] == "forward" else BWD_WRITTEN)) else "raise"
        expected_out = base
        if expect == "alias":  # the non-aliased call with the output buffer holding the input
            ref_args = _deep_copy(args0)
            ref_args = _replace(ref_args, path, _get(ref_args, tuple(how["alias"])).copy())
            call(fn, ref_args)
            expected_out = _outputs(ref_args, c["entry"])
        _case("binding", dict(c, batch=[[list(path), how]]))
        try:
            call(fn, args)
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
            got = _outputs(args, c["entry"])
            for p, v in expected_out.items():
                if p not in got or (expect == "same_others" and p == path):
                    continue
                if expect == "alias" and c["entry"] == "forward" and p[0] == "tape":
                    continue  # the tape's rows past a length are not part of the contract
                _tol_equal(got[p], v, f"{what}: output arg{list(p)} differs from the "
                           + ("non-aliased call" if expect == "alias" else "unmutated call"),
                           close=expect == "same_close")


def _fuzz_binding():
    _per_cell("binding", binding_cases, run_binding_case)

