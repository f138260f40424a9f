"""Fuzzing the layers: __call__, forward and backward of every cell kind."""
from __future__ import annotations

import math
import sys
import traceback

import numpy as np

from .common import (
    _COUNTS,
    BAD_DTYPE_FORMS,
    VALID_FORMS,
    _case,
    _check_raised,
    _close,
    _eq,
    _fail,
    _guarded,
    _settings,
    add_specials,
    clean,
    present,
)

# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------

# cell id -> (rnncore class, reference cell)
CELLS = {"lstm": ("LSTM", "lstm"), "lstm_peephole": ("LSTM", "lstm"), "gru": ("GRU", "gru"),
         "gru_v1": ("GRU", "gru"), "rnn_tanh": ("RNN", "rnn_tanh"), "rnn_relu": ("RNN", "rnn_relu"),
         "leaky": ("LeakyRNN", "leaky"), "skip": ("SkipRNN", "skip"),
         "clockwork": ("ClockworkRNN", "clockwork"), "indrnn_relu": ("IndRNN", "indrnn"),
         "indrnn_tanh": ("IndRNN", "indrnn")}

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
    elif c["cell"].startswith("indrnn"):
        kw["nonlinearity"] = c["cell"][len("indrnn_"):]
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
    if cell == "indrnn":
        return cell, {"nonlinearity": c["cell"][len("indrnn_"):]}
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
    _binding_case("skip", "minimal", "forward", ("spec", "delays"), {"set": [1, 2 ** 31 - 1]}),
    _binding_case("skip", "minimal", "backward", ("spec", "delays"), {"set": [1, 2 ** 31 - 1]}),
]
# an output aliasing an input: refused, or the answer of the non-aliased call
EXPLICIT["binding"]["gru"] = [_binding_case("gru", "full", "backward", ("grads", "weight_ih"),
                                             {"alias": ["weights", "weight_ih"]})]
EXPLICIT["binding"]["lstm"] = [_binding_case("lstm", "full", "forward", ("y",), {"alias": ["x"]}),
                               _binding_case("lstm", "full", "backward", ("dx",), {"alias": ["dy"]})]

