"""Fuzzing the model: Sequential.predict, evaluate and fit (one step)."""
from __future__ import annotations

import math
import traceback

import numpy as np

from .common import (
    _COUNTS,
    BAD_DTYPE_FORMS,
    VALID_FORMS,
    _case,
    _check_names,
    _check_raised,
    _close,
    _eq,
    _fail,
    add_specials,
    clean,
    present,
)
from .layers import _break_lengths, _make_layer, _per_cell, _set_runtime

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

