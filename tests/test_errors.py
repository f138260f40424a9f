"""Bad input gets a clear error, never a crash and never a silent wrong answer.

DESIGN.md: "Bad input gets a ValueError or TypeError that names the argument,
what was expected and what came (``x must be (T, B, 32), got (10, 4, 31)``),
never a crash and never a silent wrong answer."

Covered for rc.LSTM, rc.GRU and rc.RNN: x (ndim, input size, dtypes, empty
axes), lengths, state, backward's tape / dy / dstate, the constructor
arguments, parameters replaced by the user, the thread setting, NaN and Inf in
x, and the private pybind11 entry points ``_core.forward_f32`` /
``_core.backward_f32`` called directly with one argument broken at a time.

The private-binding cases run in a child process (this file run as a script),
so that a segfault or a hang in the C++ core shows up as a failed test naming
the case instead of killing the whole pytest session.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import rnncore as rc
from rnncore import _core

from _helpers import binding_arg_names
from _numeric import deep_copy as _deep_copy, delete_path as _delete, get_path as _get, replace_path as _replace

LAYERS = [rc.LSTM, rc.GRU, rc.RNN]
LAYER_IDS = ["LSTM", "GRU", "RNN"]
layers = pytest.mark.parametrize("cls", LAYERS, ids=LAYER_IDS)

# T time steps, B batch, I input size, H hidden size (not a multiple of the
# 8-lane vectors, so the masked tail lanes are exercised too).
T, B, I, H = 7, 3, 5, 10


def _x(shape=(T, B, I), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _esc(s: str) -> str:
    return re.escape(s)


# ---------------------------------------------------------------------------
# x: ndim, input size, batch_first
# ---------------------------------------------------------------------------

@layers
@pytest.mark.parametrize("shape", [(T, I), (I,), (T, B, I, 1), (1, T, B, I)],
                         ids=["2d", "1d", "4d-trailing", "4d-leading"])
def test_x_wrong_ndim(cls, shape):
    layer = cls(I, H)
    # a 2-D x is an error, not an unbatched sequence
    pattern = rf"x must be 3-D \(T, B, {I}\).*{len(shape)}-D.*" + _esc(str(shape))
    with pytest.raises(ValueError, match=pattern):
        layer(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"\bx\b.*3-D"):
        layer.forward(np.zeros(shape, np.float32))


@layers
def test_x_wrong_ndim_batch_first(cls):
    layer = cls(I, H, batch_first=True)
    with pytest.raises(ValueError, match=rf"x must be 3-D \(B, T, {I}\).*2-D.*\({B}, {I}\)"):
        layer(np.zeros((B, I), np.float32))


@layers
@pytest.mark.parametrize("value", [np.float32(1.0), 1.0], ids=["np-scalar", "py-float"])
def test_x_zero_d_reports_what_came(cls, value):
    # the message must report the 0-D input that came, not a reshaped (1,) array
    layer = cls(I, H)
    with pytest.raises(ValueError, match=r"x must be 3-D .*got 0-D.*\(\)") as info:
        layer(value)
    assert "1-D" not in str(info.value)


@layers
def test_x_wrong_input_size(cls):
    layer = cls(I, H)
    with pytest.raises(ValueError, match=_esc(f"x must be (T, B, {I}), got ({T}, {B}, {I - 1})")):
        layer(np.zeros((T, B, I - 1), np.float32))
    with pytest.raises(ValueError, match=_esc(f"x must be (T, B, {I}), got ({T}, {B}, {I + 3})")):
        layer.forward(np.zeros((T, B, I + 3), np.float32))


@layers
def test_x_wrong_input_size_batch_first(cls):
    layer = cls(I, H, batch_first=True)
    with pytest.raises(ValueError, match=_esc(f"x must be (B, T, {I}), got ({B}, {T}, {I - 1})")):
        layer(np.zeros((B, T, I - 1), np.float32))


@layers
def test_x_example_from_the_contract(cls):
    layer = cls(5, 4)
    with pytest.raises(ValueError, match=_esc("x must be (T, B, 5), got (7, 3, 4)")):
        layer(np.zeros((7, 3, 4), np.float32))


# ---------------------------------------------------------------------------
# x: dtypes
# ---------------------------------------------------------------------------

BAD_X = {
    "complex64": lambda: _x().astype(np.complex64),
    "complex128": lambda: _x().astype(np.complex128),
    "object": lambda: _x().astype(object),
    "str": lambda: np.full((T, B, I), "a"),
    "bytes": lambda: np.full((T, B, I), b"a"),
    "bool": lambda: _x() > 0,
    "ragged-list": lambda: [[[1.0, 2.0]], [[1.0]]],
}


@layers
@pytest.mark.parametrize("kind", list(BAD_X))
def test_x_bad_dtype_is_type_error(cls, kind):
    layer = cls(I, H)
    with pytest.raises(TypeError, match=r"\bx\b"):
        layer(BAD_X[kind]())
    with pytest.raises(TypeError, match=r"\bx\b"):
        layer.forward(BAD_X[kind]())


@layers
def test_x_bad_dtype_names_the_dtype(cls):
    layer = cls(I, H)
    with pytest.raises(TypeError, match=r"\bx\b.*complex64"):
        layer(_x().astype(np.complex64))
    with pytest.raises(TypeError, match=r"\bx\b.*bool"):
        layer(_x() > 0)


@layers
def test_x_none_says_none(cls):
    # "got dtype object" hides what came: the message should say None
    layer = cls(I, H)
    with pytest.raises(TypeError, match=r"\bx\b.*None"):
        layer(None)


@layers
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8])
def test_x_numeric_dtypes_are_converted(cls, dtype):
    layer = cls(I, H, seed=0)
    raw = np.random.default_rng(1).integers(-3, 4, size=(T, B, I)) if np.dtype(dtype).kind in "iu" \
        else np.random.default_rng(1).standard_normal((T, B, I))
    if np.dtype(dtype).kind == "u":
        raw = np.abs(raw)
    x = raw.astype(dtype)
    y, st = layer(x)
    y32, st32 = layer(x.astype(np.float32))
    assert y.dtype == np.float32
    assert_array_equal(y, y32)
    if cls is rc.LSTM:
        assert_array_equal(st[0], st32[0])
        assert_array_equal(st[1], st32[1])
    else:
        assert_array_equal(st, st32)


@layers
def test_x_list_and_non_contiguous_view_are_accepted(cls):
    layer = cls(I, H, seed=0)
    x = _x()
    y, _ = layer(x)
    assert_array_equal(layer(x.tolist())[0], y)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)  # same values, not C-contiguous
    assert not xt.flags.c_contiguous
    assert_array_equal(layer(xt)[0], y)
    strided = np.zeros((T, B, 2 * I), np.float32)
    strided[:, :, ::2] = x
    assert_array_equal(layer(strided[:, :, ::2])[0], y)


# ---------------------------------------------------------------------------
# empty axes
# ---------------------------------------------------------------------------

@layers
@pytest.mark.parametrize("batch_first", [False, True])
def test_zero_time_steps(cls, batch_first):
    layer = cls(I, H, batch_first=batch_first)
    shape = (B, 0, I) if batch_first else (0, B, I)
    with pytest.raises(ValueError, match=r"\bx\b.*T = 0"):
        layer(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"\bx\b.*T = 0"):
        layer.forward(np.zeros(shape, np.float32))


@layers
@pytest.mark.parametrize("batch_first", [False, True])
def test_zero_batch(cls, batch_first):
    layer = cls(I, H, batch_first=batch_first)
    shape = (0, T, I) if batch_first else (T, 0, I)
    with pytest.raises(ValueError, match=r"\bx\b.*B = 0"):
        layer(np.zeros(shape, np.float32))


# ---------------------------------------------------------------------------
# lengths
# ---------------------------------------------------------------------------

@layers
@pytest.mark.parametrize("lengths, got", [
    (np.full((B, 1), 2), f"({B}, 1)"),
    (np.full(B - 1, 2), f"({B - 1},)"),
    (np.full(B + 1, 2), f"({B + 1},)"),
    (np.int64(3), "()"),
], ids=["2d", "short", "long", "scalar"])
def test_lengths_wrong_shape(cls, lengths, got):
    layer = cls(I, H)
    with pytest.raises(ValueError, match=_esc(f"lengths must be ({B},), got {got}")):
        layer(_x(), lengths=lengths)


@layers
@pytest.mark.parametrize("bad", [0, T + 1, -1, -(2 ** 31), 2 ** 40])
def test_lengths_out_of_range(cls, bad):
    layer = cls(I, H)
    lengths = np.array([T, bad, 1], dtype=np.int64)
    with pytest.raises(ValueError, match=_esc(f"lengths must be in [1, {T}]") + rf".*got {bad}\b"):
        layer(_x(), lengths=lengths)
    with pytest.raises(ValueError, match=r"lengths.*\[1, 7\]"):
        layer.forward(_x(), lengths=lengths.tolist())


@layers
@pytest.mark.parametrize("lengths, exc", [
    ([1.5, 2.0, 3.0], TypeError),
    ([np.nan, 2.0, 3.0], TypeError),
    (["1", "2", "3"], TypeError),
    ([True, True, True], TypeError),
    ([1, None, 3], TypeError),
    ("abc", TypeError),
], ids=["non-integer-float", "nan", "strings", "bools", "None-inside", "a-string"])
def test_lengths_bad_dtype(cls, lengths, exc):
    layer = cls(I, H)
    with pytest.raises(exc, match=r"\blengths\b"):
        layer(_x(), lengths=lengths)


@layers
def test_lengths_list_of_ints_works(cls):
    layer = cls(I, H, seed=0)
    x = _x()
    lens = [T, 4, 1]
    y_list, st_list = layer(x, lengths=lens)
    y_arr, st_arr = layer(x, lengths=np.array(lens, np.int32))
    assert_array_equal(y_list, y_arr)
    assert_array_equal(layer(x, lengths=np.array(lens, np.int64))[0], y_arr)
    assert_array_equal(layer(x, lengths=tuple(lens))[0], y_arr)
    assert np.all(y_list[4:, 1] == 0) and np.all(y_list[1:, 2] == 0)
    # a row that runs the full T equals the run without lengths
    assert_array_equal(y_list[:, 0], layer(x)[0][:, 0])


# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

def _state_shape(L=1, D=1, b=B):
    return (L * D, b, H)


@layers
@pytest.mark.parametrize("shape", [(1, B + 1, H), (2, B, H), (1, B, H + 1), (B, H), (1, 1, B, H)],
                         ids=["batch", "layers", "hidden", "2d", "4d"])
def test_state_wrong_shape(cls, shape):
    layer = cls(I, H)
    good = np.zeros(_state_shape(), np.float32)
    bad = np.zeros(shape, np.float32)
    got = _esc(str(shape))
    want = _esc(str(_state_shape()))
    if cls is rc.LSTM:
        with pytest.raises(ValueError, match=r"state\[0\] \(h\) must be.*" + want + r".*got " + got):
            layer(_x(), state=(bad, good))
        with pytest.raises(ValueError, match=r"state\[1\] \(c\) must be.*" + want + r".*got " + got):
            layer(_x(), state=(good, bad))
    else:
        with pytest.raises(ValueError, match=r"\bstate must be.*" + want + r".*got " + got):
            layer(_x(), state=bad)


@layers
def test_state_wrong_shape_bidirectional_two_layers(cls):
    layer = cls(I, H, num_layers=2, bidirectional=True)
    want = _esc(str((4, B, H)))
    bad = np.zeros((2, B, H), np.float32)
    state = (bad, np.zeros((4, B, H), np.float32)) if cls is rc.LSTM else bad
    with pytest.raises(ValueError, match=r"state.*" + want + r".*got " + _esc(str((2, B, H)))):
        layer(_x(), state=state)


def test_lstm_state_must_be_a_pair():
    layer = rc.LSTM(I, H)
    h = np.zeros(_state_shape(), np.float32)
    for bad, got in [(h, "ndarray"), ((h,), "tuple"), ((h, h, h), "tuple"), ({"h": h}, "dict"), ("hc", "str")]:
        with pytest.raises(TypeError, match=r"\bstate must be a tuple \(h, c\).*got " + got):
            layer(_x(), state=bad)


@pytest.mark.parametrize("cls", [rc.GRU, rc.RNN], ids=["GRU", "RNN"])
def test_gru_rnn_state_must_be_one_array(cls):
    layer = cls(I, H)
    h = np.zeros(_state_shape(), np.float32)
    for bad, got in [((h, h), "tuple"), ([h], "list")]:
        with pytest.raises(TypeError, match=r"\bstate must be an array.*got " + got):
            layer(_x(), state=bad)


@layers
@pytest.mark.parametrize("dtype", [np.complex64, object, bool, "U3"])
def test_state_wrong_dtype_kind(cls, dtype):
    layer = cls(I, H)
    good = np.zeros(_state_shape(), np.float32)
    bad = np.zeros(_state_shape(), dtype)
    if cls is rc.LSTM:
        with pytest.raises(TypeError, match=r"state\[0\] \(h\)"):
            layer(_x(), state=(bad, good))
        with pytest.raises(TypeError, match=r"state\[1\] \(c\)"):
            layer(_x(), state=(good, bad))
    else:
        with pytest.raises(TypeError, match=r"\bstate\b"):
            layer(_x(), state=bad)


@layers
def test_state_numeric_dtypes_are_converted(cls):
    layer = cls(I, H, seed=0)
    h = np.random.default_rng(3).standard_normal(_state_shape())
    hi = np.random.default_rng(4).integers(-1, 2, size=_state_shape())
    if cls is rc.LSTM:
        y, _ = layer(_x(), state=(h, hi))
        y32, _ = layer(_x(), state=(h.astype(np.float32), hi.astype(np.float32)))
    else:
        y, _ = layer(_x(), state=h)
        y32, _ = layer(_x(), state=h.astype(np.float32))
    assert_array_equal(y, y32)


# ---------------------------------------------------------------------------
# backward: tape, dy, dstate
# ---------------------------------------------------------------------------

@layers
@pytest.mark.parametrize("shape", [(T, B, H + 1), (T, B + 1, H), (T + 1, B, H), (B, H), (T, B, H, 1)],
                         ids=["width", "batch", "steps", "2d", "4d"])
def test_dy_wrong_shape(cls, shape):
    layer = cls(I, H)
    y, _, tape = layer.forward(_x())
    got = _esc(str(shape))
    with pytest.raises(ValueError, match=r"\bdy must be.*" + _esc(str((T, B, H))) + r".*got " + got):
        layer.backward(tape, np.zeros(shape, np.float32))


@layers
def test_dy_wrong_shape_batch_first(cls):
    layer = cls(I, H, batch_first=True)
    y, _, tape = layer.forward(_x((B, T, I)))
    assert y.shape == (B, T, H)
    with pytest.raises(ValueError, match=r"\bdy must be.*" + _esc(str((B, T, H))) + r".*got "
                       + _esc(str((T, B, H)))):
        layer.backward(tape, np.zeros((T, B, H), np.float32))


@layers
def test_dy_bad_dtype(cls):
    layer = cls(I, H)
    y, _, tape = layer.forward(_x())
    with pytest.raises(TypeError, match=r"\bdy\b.*complex"):
        layer.backward(tape, np.ones_like(y, dtype=np.complex64))
    with pytest.raises(TypeError, match=r"\bdy\b.*bool"):
        layer.backward(tape, np.ones_like(y, dtype=bool))


@layers
def test_dy_none_says_none(cls):
    # "got dtype object" hides what came: the message should say None
    layer = cls(I, H)
    y, _, tape = layer.forward(_x())
    with pytest.raises(TypeError, match=r"\bdy\b.*None"):
        layer.backward(tape, None)


@layers
def test_dy_numeric_dtypes_are_converted(cls):
    layer = cls(I, H, seed=0)
    y, _, tape = layer.forward(_x())
    dy = np.random.default_rng(5).integers(-2, 3, size=y.shape)
    dx, _ = layer.backward(tape, dy)
    g = {k: v.copy() for k, v in layer.grads.items()}
    layer.zero_grad()
    dx32, _ = layer.backward(tape, dy.astype(np.float32))
    assert_array_equal(dx, dx32)
    for k in g:
        assert_array_equal(g[k], layer.grads[k])


@layers
def test_tape_from_another_layer(cls):
    a, b = cls(I, H, seed=0), cls(I, H, seed=0)
    y, _, tape = a.forward(_x())
    with pytest.raises(TypeError, match=r"\btape\b"):
        b.backward(tape, np.ones_like(y))
    assert all(not g.any() for g in b.grads.values())


@layers
@pytest.mark.parametrize("bad, got", [("tape", "str"), (None, "NoneType"), ({}, "dict")],
                         ids=["str", "None", "dict"])
def test_tape_not_a_tape(cls, bad, got):
    # the message must say what came, not only what was expected
    layer = cls(I, H)
    y, _, _ = layer.forward(_x())
    with pytest.raises(TypeError, match=r"\btape\b.*" + got):
        layer.backward(bad, np.ones_like(y))


@layers
def test_dstate_wrong_shape(cls):
    layer = cls(I, H)
    y, _, tape = layer.forward(_x())
    good = np.zeros(_state_shape(), np.float32)
    bad = np.zeros((1, B + 1, H), np.float32)
    want, got = _esc(str(_state_shape())), _esc(str((1, B + 1, H)))
    if cls is rc.LSTM:
        with pytest.raises(ValueError, match=r"dstate\[0\] \(h\).*" + want + r".*got " + got):
            layer.backward(tape, np.ones_like(y), dstate=(bad, good))
        with pytest.raises(ValueError, match=r"dstate\[1\] \(c\).*" + want + r".*got " + got):
            layer.backward(tape, np.ones_like(y), dstate=(good, bad))
        with pytest.raises(TypeError, match=r"\bdstate must be a tuple"):
            layer.backward(tape, np.ones_like(y), dstate=good)
    else:
        with pytest.raises(ValueError, match=r"\bdstate must be.*" + want + r".*got " + got):
            layer.backward(tape, np.ones_like(y), dstate=bad)
        with pytest.raises(TypeError, match=r"\bdstate must be an array"):
            layer.backward(tape, np.ones_like(y), dstate=(good, good))


# ---------------------------------------------------------------------------
# constructor arguments
# ---------------------------------------------------------------------------

@layers
@pytest.mark.parametrize("arg", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value, exc, shown", [
    (0, ValueError, r">= 1, got 0"),
    (-3, ValueError, r">= 1, got -3"),
    (2.0, TypeError, r"int, got float"),
    (2.5, TypeError, r"int, got float"),
    (True, TypeError, r"int, got bool"),
    ("4", TypeError, r"int, got str"),
    (None, TypeError, r"int, got NoneType"),
], ids=["zero", "negative", "float", "float-frac", "bool", "str", "None"])
def test_constructor_sizes(cls, arg, value, exc, shown):
    kw = {"input_size": I, "hidden_size": H, arg: value}
    with pytest.raises(exc, match=rf"\b{arg}\b.*{shown}"):
        cls(**kw)


@layers
def test_constructor_numpy_ints_are_accepted(cls):
    layer = cls(np.int64(I), np.int32(H), num_layers=np.int16(2))
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (I, H, 2)
    assert type(layer.hidden_size) is int


@layers
@pytest.mark.parametrize("value, exc, shown", [
    (-0.1, ValueError, r"\[0, 1\), got -0.1"),
    (1.0, ValueError, r"\[0, 1\), got 1.0"),
    (1.5, ValueError, r"\[0, 1\), got 1.5"),
    (float("nan"), ValueError, r"got nan"),
    ("0.5", TypeError, r"str"),
    (None, TypeError, r"NoneType"),
    (True, TypeError, r"bool"),
], ids=["negative", "one", "above-one", "nan", "str", "None", "bool"])
def test_constructor_dropout(cls, value, exc, shown):
    with pytest.raises(exc, match=r"\bdropout\b.*" + shown):
        cls(I, H, num_layers=2, dropout=value)


@layers
@pytest.mark.parametrize("dtype, shown", [
    (np.float16, "float16"), (int, "int"), (np.int32, "int32"), ("foo", "foo"),
    (np.complex64, "complex64"), (object, "object"), (bool, "bool"),
], ids=["float16", "int", "int32", "foo", "complex64", "object", "bool"])
def test_constructor_dtype(cls, dtype, shown):
    with pytest.raises(TypeError, match=r"\bdtype must be float32 or float64, got .*" + shown):
        cls(I, H, dtype=dtype)


@layers
def test_constructor_dtype_none_is_not_silently_float64(cls):
    # np.dtype(None) is float64: dtype=None must either be refused or mean
    # the documented default (float32), never silently switch to float64
    try:
        layer = cls(I, H, dtype=None)
    except TypeError as e:
        assert "dtype" in str(e) and "None" in str(e)
    else:
        assert layer.dtype == np.float32, f"dtype=None gave a {layer.dtype} layer"


@layers
@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", "float64", np.dtype("float64")])
def test_constructor_dtype_ok(cls, dtype):
    layer = cls(I, H, dtype=dtype)
    assert layer.dtype == np.dtype(dtype)
    y, _ = layer(_x())
    assert y.dtype == np.dtype(dtype)


def test_constructor_nonlinearity():
    with pytest.raises(ValueError, match=r"\bnonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        rc.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises((ValueError, TypeError), match=r"\bnonlinearity\b.*None"):
        rc.RNN(I, H, nonlinearity=None)
    with pytest.raises((ValueError, TypeError), match=r"\bnonlinearity\b.*'TANH'"):
        rc.RNN(I, H, nonlinearity="TANH")


BOOL_ARGS = [(cls, arg) for cls in LAYERS for arg in ("bias", "batch_first", "bidirectional")]
BOOL_ARGS += [(rc.LSTM, "peephole"), (rc.GRU, "reset_after")]


@pytest.mark.parametrize("cls, arg", BOOL_ARGS, ids=[f"{c.__name__}-{a}" for c, a in BOOL_ARGS])
@pytest.mark.parametrize("value, shown", [(1, "int"), (0, "int"), ("yes", "str"), (None, "NoneType"),
                                          (1.0, "float")], ids=["1", "0", "str", "None", "float"])
def test_constructor_bools(cls, arg, value, shown):
    with pytest.raises(TypeError, match=rf"\b{arg} must be a bool, got {shown}"):
        cls(I, H, **{arg: value})


@pytest.mark.parametrize("cls, arg", BOOL_ARGS, ids=[f"{c.__name__}-{a}" for c, a in BOOL_ARGS])
def test_constructor_numpy_bool_is_accepted(cls, arg):
    layer = cls(I, H, **{arg: np.bool_(True)})
    assert getattr(layer, arg) is True


@layers
def test_constructor_seed(cls):
    with pytest.raises(ValueError, match=r"\bseed must be >= 0, got -1"):
        cls(I, H, seed=-1)
    with pytest.raises(TypeError, match=r"\bseed must be an int, got float"):
        cls(I, H, seed=1.5)


@layers
def test_constructor_unknown_keyword(cls):
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(I, H, hiden_size=3)
    with pytest.raises(TypeError):
        cls(I, H, 2)  # num_layers is keyword-only


# ---------------------------------------------------------------------------
# parameters replaced by the user
# ---------------------------------------------------------------------------

def _names(layer):
    return sorted(layer.params)


@layers
def test_param_wrong_shape_is_named_at_next_call(cls):
    probe = cls(I, H)
    for name in _names(probe):
        layer = cls(I, H, seed=0)
        shape = layer.params[name].shape
        bad_shape = shape[:-1] + (shape[-1] + 1,)
        layer.params[name] = np.zeros(bad_shape, np.float32)
        msg = _esc(f"params['{name}'] must be {shape}, got {bad_shape}")
        with pytest.raises(ValueError, match=msg):
            layer(_x())
        with pytest.raises(ValueError, match=msg):
            layer.forward(_x())


@layers
def test_param_wrong_ndim_is_named(cls):
    layer = cls(I, H, seed=0)
    layer.params["weight_hh_l0"] = layer.params["weight_hh_l0"].ravel()
    with pytest.raises(ValueError, match=_esc("params['weight_hh_l0']")):
        layer(_x())


@layers
@pytest.mark.parametrize("bad", ["float64", "int32", "list", "complex64"])
def test_param_wrong_dtype_is_named_at_next_call(cls, bad):
    for name in _names(cls(I, H)):
        layer = cls(I, H, seed=0)
        p = layer.params[name]
        layer.params[name] = p.tolist() if bad == "list" else p.astype(bad)
        with pytest.raises(TypeError, match=_esc(f"params['{name}']") + r".*float32.*got "
                           + ("list" if bad == "list" else bad)):
            layer(_x())


@layers
def test_param_replaced_between_forward_and_backward(cls):
    layer = cls(I, H, seed=0)
    y, _, tape = layer.forward(_x())
    layer.params["weight_hh_l0"] = np.zeros((1, 1), np.float32)
    with pytest.raises(ValueError, match=_esc("params['weight_hh_l0']") + r".*got \(1, 1\)"):
        layer.backward(tape, np.ones_like(y))


@layers
def test_param_deep_layer_name(cls):
    layer = cls(I, H, num_layers=2, bidirectional=True, seed=0)
    name = "weight_ih_l1_reverse"
    want = layer.params[name].shape
    assert want[1] == 2 * H
    layer.params[name] = np.zeros((want[0], H), np.float32)
    with pytest.raises(ValueError, match=_esc(f"params['{name}'] must be {want}, got ({want[0]}, {H})")):
        layer(_x())


@layers
def test_grad_replaced_wrongly_is_named(cls):
    layer = cls(I, H, seed=0)
    y, _, tape = layer.forward(_x())
    shape = layer.grads["weight_hh_l0"].shape
    layer.grads["weight_hh_l0"] = np.zeros((1, 1), np.float32)
    with pytest.raises(ValueError, match=_esc("grads['weight_hh_l0']") + r".*got \(1, 1\)"):
        layer.backward(tape, np.ones_like(y))
    layer.grads["weight_hh_l0"] = np.zeros(shape, np.float64)
    with pytest.raises(TypeError, match=_esc("grads['weight_hh_l0']") + r".*float64"):
        layer.backward(tape, np.ones_like(y))


@layers
def test_grad_read_only_is_named(cls):
    # the error comes from the C++ checks as "grad weight_hh must be writable":
    # it should name the user's entry, grads['weight_hh_l0']
    layer = cls(I, H, seed=0)
    y, _, tape = layer.forward(_x())
    g = np.zeros_like(layer.grads["weight_hh_l0"])
    g.flags.writeable = False
    layer.grads["weight_hh_l0"] = g
    with pytest.raises(ValueError, match=_esc("grads['weight_hh_l0']") + r".*writ"):
        layer.backward(tape, np.ones_like(y))


def _non_contiguous_copy(p):
    """The same values in a correct-shape array that is not C-contiguous."""
    if p.ndim == 1:
        big = np.zeros(2 * p.size, p.dtype)
        big[::2] = p
        v = big[::2]
    else:
        big = np.zeros(p.shape[:-1] + (2 * p.shape[-1],), p.dtype)
        big[..., ::2] = p
        v = big[..., ::2]
    assert not v.flags.c_contiguous and v.shape == p.shape
    return v


@layers
@pytest.mark.parametrize("how", ["strided", "fortran", "read-only"])
def test_param_non_contiguous_view_gives_the_right_answer(cls, how):
    x = _x()
    ref = cls(I, H, seed=0, bidirectional=True)
    y_ref, st_ref, tape_ref = ref.forward(x)
    dy = np.random.default_rng(7).standard_normal(y_ref.shape).astype(np.float32)
    dx_ref, _ = ref.backward(tape_ref, dy)

    layer = cls(I, H, seed=0, bidirectional=True)
    for name, p in list(layer.params.items()):
        if how == "strided":
            layer.params[name] = _non_contiguous_copy(p)
        elif how == "fortran":
            layer.params[name] = np.asfortranarray(p) if p.ndim > 1 else _non_contiguous_copy(p)
        else:
            q = p.copy()
            q.flags.writeable = False
            layer.params[name] = q
    assert_array_equal(layer(x)[0], y_ref)
    y, st, tape = layer.forward(x)
    assert_array_equal(y, y_ref)
    dx, _ = layer.backward(tape, dy)
    assert_array_equal(dx, dx_ref)
    for k in ref.grads:
        assert_array_equal(layer.grads[k], ref.grads[k])


@layers
def test_param_changed_in_place_through_a_view_is_seen(cls):
    # no stale copy: an in-place change of a (non-contiguous) params array is
    # seen by the next call
    x = _x()
    layer = cls(I, H, seed=0)
    view = _non_contiguous_copy(layer.params["weight_hh_l0"])
    layer.params["weight_hh_l0"] = view
    layer(x)
    view *= 0.5
    ref = cls(I, H, seed=0)
    ref.params["weight_hh_l0"] *= 0.5
    assert_array_equal(layer(x)[0], ref(x)[0])
    layer.params["bias_ih_l0"][:] = 0.25  # in place, contiguous
    ref.params["bias_ih_l0"] = np.full_like(ref.params["bias_ih_l0"], 0.25)  # by assignment
    assert_array_equal(layer(x)[0], ref(x)[0])


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    yield
    rc.set_num_threads(None)


def test_set_num_threads_zero(restore_threads):
    with pytest.raises(ValueError, match=r"\bn\b.*got 0"):
        rc.set_num_threads(0)


@pytest.mark.parametrize("value, shown", [("2", "str"), (2.0, "float"), (True, "bool"), ([2], "list")])
def test_set_num_threads_type(restore_threads, value, shown):
    with pytest.raises(TypeError, match=r"\bn must be an int or None, got " + shown):
        rc.set_num_threads(value)


def test_set_num_threads_minus_one_and_none(restore_threads):
    rc.set_num_threads(-1)
    n = rc.get_num_threads()
    assert isinstance(n, int) and n >= 1
    rc.set_num_threads(1)
    assert rc.get_num_threads() == 1
    y1, _ = rc.LSTM(I, H, seed=0)(_x())
    rc.set_num_threads(-1)
    y2, _ = rc.LSTM(I, H, seed=0)(_x())
    assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
    rc.set_num_threads(None)
    assert rc.get_num_threads() >= 1


def test_set_num_threads_too_negative(restore_threads):
    n = -(_core.max_threads() + 1)
    with pytest.raises(ValueError, match=rf"\bn\b.*{n}"):
        rc.set_num_threads(n)


def test_set_num_threads_numpy_int(restore_threads):
    # constructors take numpy integers (numbers.Integral); so should this
    rc.set_num_threads(np.int64(1))
    assert rc.get_num_threads() == 1


# ---------------------------------------------------------------------------
# NaN and Inf in x
# ---------------------------------------------------------------------------

def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _numpy_forward(layer, x):
    """One layer, one direction, zero state, time-major, float64: what numpy
    does with the same maths (NaN and Inf go where numpy sends them)."""
    p = {k: v.astype(np.float64) for k, v in layer.params.items()}
    w, u, bi, bh = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]
    x = x.astype(np.float64)
    steps, batch, _ = x.shape
    h = np.zeros((batch, layer.hidden_size))
    c = np.zeros_like(h)
    ys = []
    with np.errstate(all="ignore"):
        for t in range(steps):
            a = x[t] @ w.T + bi
            r = (h * u if isinstance(layer, rc.IndRNN) else h @ u.T) + bh
            if isinstance(layer, rc.LSTM):
                i, f, g, o = np.split(a + r, 4, axis=1)
                c = _sig(f) * c + _sig(i) * np.tanh(g)
                h = _sig(o) * np.tanh(c)
            elif isinstance(layer, rc.GRU):
                ar, az, an = np.split(a, 3, axis=1)
                rr, rz, rn = np.split(r, 3, axis=1)
                rg, z = _sig(ar + rr), _sig(az + rz)
                if layer.reset_after:
                    n = np.tanh(an + rg * rn)
                else:  # W_hn (r * h) + b_hn
                    n = np.tanh(an + (rg * h) @ u[2 * layer.hidden_size:].T + bh[2 * layer.hidden_size:])
                h = (1 - z) * n + z * h
            elif layer.nonlinearity == "relu":
                h = np.maximum(a + r, 0)
            else:
                h = np.tanh(a + r)
            ys.append(h)
    return np.stack(ys)


NAN_CELLS = [(rc.LSTM, {}), (rc.GRU, {}), (rc.GRU, {"reset_after": False}), (rc.RNN, {}),
             (rc.RNN, {"nonlinearity": "relu"}), (rc.IndRNN, {}), (rc.IndRNN, {"nonlinearity": "tanh"})]
NAN_IDS = ["LSTM", "GRU", "GRU-v1", "RNN-tanh", "RNN-relu", "IndRNN-relu", "IndRNN-tanh"]


@pytest.fixture(params=rc.available_isas())
def isa(request):
    before = rc.get_isa()
    rc.runtime._select_isa(request.param)
    yield request.param
    rc.runtime._select_isa(before)


@pytest.mark.parametrize("cls, kw", NAN_CELLS, ids=NAN_IDS)
def test_nan_in_x_propagates(cls, kw, isa):
    layer = cls(I, H, seed=0, **kw)
    x = _x()
    t0, b0 = 2, 1
    x[t0, b0, 0] = np.nan
    y, st = layer(x)
    nan = np.isnan(y)
    assert nan[t0:, b0].all(), "NaN must reach every unit of the row from its step on"
    assert not nan[:t0].any() and not nan[:, [0, 2]].any(), "NaN must stay in its row and after its step"
    assert np.isfinite(y[:, [0, 2]]).all()
    h = st[0] if cls is rc.LSTM else st
    assert np.isnan(h[0, b0]).all() and np.isfinite(h[0, [0, 2]]).all()
    y_tr, _, _ = layer.forward(x)
    assert_array_equal(np.isnan(y_tr), nan)


@pytest.mark.parametrize("cls, kw", NAN_CELLS, ids=NAN_IDS)
def test_nan_in_x_bidirectional(cls, kw):
    layer = cls(I, H, seed=0, bidirectional=True, **kw)
    x = _x()
    t0, b0 = 3, 2
    x[t0, b0, 1] = np.nan
    y, _ = layer(x)
    fwd, bwd = np.isnan(y[..., :H]), np.isnan(y[..., H:])
    assert fwd[t0:, b0].all() and not fwd[:t0].any()
    assert bwd[:t0 + 1, b0].all() and not bwd[t0 + 1:].any()
    assert not np.isnan(y[:, :b0]).any()


@pytest.mark.parametrize("cls, kw", NAN_CELLS, ids=NAN_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nan_inf_in_x_as_numpy(cls, kw, bad, isa):
    layer = cls(I, H, seed=0, **kw)
    x = _x()
    x[2, 1, 0] = bad
    x[4, 0, 3] = -bad if not np.isnan(bad) else bad
    y, _ = layer(x)
    ref = _numpy_forward(layer, x)
    assert_array_equal(np.isnan(y), np.isnan(ref))
    assert_array_equal(np.isposinf(y), np.isposinf(ref))
    assert_array_equal(np.isneginf(y), np.isneginf(ref))
    assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@layers
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_nan_inf_in_padding_past_lengths_is_ignored(cls, bad):
    # x past a row's length is padding: it must not reach y, dx or any gradient
    lens = np.array([T, 4, 2])
    x = _x()
    clean = x.copy()
    x[4:, 1] = bad
    x[2:, 2] = bad
    a = cls(I, H, seed=0, bidirectional=True)
    b = cls(I, H, seed=0, bidirectional=True)
    y, _, tape = a.forward(x, lengths=lens)
    y_ref, _, tape_ref = b.forward(clean, lengths=lens)
    assert_array_equal(y, y_ref)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    dx, _ = a.backward(tape, dy)
    dx_ref, _ = b.backward(tape_ref, dy)
    assert_array_equal(dx, dx_ref)
    for k in a.grads:
        assert np.isfinite(a.grads[k]).all(), f"grads[{k!r}] poisoned by padding"
        assert_allclose(a.grads[k], b.grads[k], rtol=1e-6, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------
# private bindings: _core.forward_f32 / backward_f32 with one argument broken
# ---------------------------------------------------------------------------
#
# The valid arguments are exactly what layers.py passes: a small layer runs a
# forward and a backward pass with _core swapped for a recorder, and the first
# call of each is kept (its keyword arguments, the CellSpec as its fields).
# Then one argument (or one entry of a dict argument) is broken at a time; the
# case's CellSpec is made from its (maybe broken) fields inside the case. Each
# case runs in a child process (_run_binding_cases): a crash or a hang becomes
# a failed test naming the case.
#
# The layout below is the one of bindings.cpp today:
#   forward(spec, x, weights, h0, c0, lengths, y, hn, cn, tape, threads, step0)
#   backward(spec, x, weights, h0, c0, lengths, tape, dy, dhn, dcn, dx,
#            dx_accumulate, dh0, dc0, grads, dh_seq, threads, step0)
#   spec = CellSpec(kind, hidden, num_dirs, dir, reverse, batch_first,
#                   peephole, reset_after, relu, delays, periods)
#   weights / grads = {weight_ih, weight_hh, bias_ih, bias_hh, weight_ch, alpha}
#   tape = {gates, hprev, c, extra}
# test_private_binding_layout_is_known fails first if it changes.

BT, BB, BI, BH = 5, 3, 4, 6
CELLS = {"lstm": rc.LSTM, "gru": rc.GRU, "rnn": rc.RNN}
FWD_KEYS = {"spec", "x", "weights", "h0", "c0", "lengths", "y", "hn", "cn", "tape", "threads", "step0"}
BWD_KEYS = {"spec", "x", "weights", "h0", "c0", "lengths", "tape", "dy", "dhn", "dcn", "dx", "dx_accumulate",
            "dh0", "dc0", "grads", "dh_seq", "threads", "step0"}
SPEC_KEYS = {"kind", "hidden", "num_dirs", "dir", "reverse", "batch_first", "peephole", "reset_after", "relu",
             "delays", "periods"}

# path -> (name in the bindings' messages, required, written to)
_W = {"weight_ih": "weight_ih", "weight_hh": "weight_hh", "bias_ih": "bias_ih", "bias_hh": "bias_hh"}
_TAPE = {"gates": "tape gates", "hprev": "tape hprev", "c": "tape c", "extra": "tape extra"}
FWD_ARRAYS = {("x",): ("x", True, False), ("h0",): ("h0", False, False), ("c0",): ("c0", False, False),
              ("lengths",): ("lengths", False, False), ("y",): ("y", True, True), ("hn",): ("hn", False, True),
              ("cn",): ("cn", False, True)}
FWD_ARRAYS.update({("weights", k): (n, k in ("weight_ih", "weight_hh"), False) for k, n in _W.items()})
FWD_ARRAYS.update({("tape", k): (n, True, True) for k, n in _TAPE.items()})
BWD_ARRAYS = {("x",): ("x", True, False), ("h0",): ("h0", False, False), ("c0",): ("c0", False, False),
              ("lengths",): ("lengths", False, False), ("dy",): ("dy", True, False),
              ("dhn",): ("dhn", False, False), ("dcn",): ("dcn", False, False), ("dx",): ("dx", False, True),
              ("dh0",): ("dh0", False, True), ("dc0",): ("dc0", False, True)}
BWD_ARRAYS.update({("weights", k): (n, k in ("weight_ih", "weight_hh"), False) for k, n in _W.items()})
BWD_ARRAYS.update({("tape", k): (n, True, False) for k, n in _TAPE.items()})
BWD_ARRAYS.update({("grads", k): ("grad " + n, True, True) for k, n in _W.items()})
# arrays each cell uses (the others are None, or not in the dict, in what layers.py passes)
_LSTM_ONLY = {"c0", "cn", "tape c", "dcn", "dc0"}
_GRU_ONLY = {"tape extra"}
# arrays broken in every way; the others get the common breakings only
_KEY_ARRAYS = {"x", "weight_hh", "y", "dy", "tape gates", "grad weight_ih", "lengths"}


def _capture(cell):
    """(forward kwargs, backward kwargs) of the first direction of a 1-layer
    layer, as layers.py passes them (with state, lengths and dstate given)."""
    from rnncore import layers as layers_mod
    seen = {}
    real = layers_mod._core

    class Recorder:
        def __getattr__(self, name):
            fn = getattr(real, name)
            if name not in ("forward_f32", "backward_f32"):
                return fn

            def record(*args, **kwargs):
                # layers.py passes them in order: name them from the binding's signature
                names = binding_arg_names(fn)
                assert len(args) <= len(names), (name, len(args), names)
                kwargs = {**dict(zip(names, args)), **kwargs}
                seen.setdefault(name, _deep_copy({**kwargs, "spec": kwargs["spec"].fields()}))
                return fn(**kwargs)
            return record

    layers_mod._core = Recorder()
    try:
        layer = CELLS[cell](BI, BH, seed=0)
        x = np.random.default_rng(0).standard_normal((BT, BB, BI)).astype(np.float32)
        h = np.random.default_rng(1).standard_normal((1, BB, BH)).astype(np.float32)
        state = (h, h.copy()) if cell == "lstm" else h
        y, _, tape = layer.forward(x, state=state, lengths=[BT, 3, 1])
        layer.backward(tape, np.ones_like(y), dstate=state)
    finally:
        layers_mod._core = real
    return seen["forward_f32"], seen["backward_f32"]


def _call(fn, kwargs):
    """fn(**kwargs) with the spec's fields made into a CellSpec first (which may raise)."""
    if isinstance(kwargs.get("spec"), dict):
        kwargs = {**kwargs, "spec": _core.CellSpec(**kwargs["spec"])}
    return fn(**kwargs)


def _break(v, how):
    """One way of getting an array argument wrong."""
    if how == "none":
        return None
    if how == "f64":
        return v.astype(np.float64)
    if how == "int64":
        return v.astype(np.int64)
    if how == "shape":  # last axis one too long
        return np.zeros(v.shape[:-1] + (v.shape[-1] + 1,), v.dtype)
    if how == "ndim":  # a trailing axis of 1
        return v[..., None].copy()
    if how == "list":
        return v.tolist()
    if how == "nc":
        return np.asfortranarray(v) if v.ndim > 1 and v.shape[0] > 1 else _non_contiguous_copy(v)
    if how == "readonly":
        r = v.copy()
        r.flags.writeable = False
        return r
    if how == "range":  # lengths out of [1, T]
        r = v.copy()
        r[1] = BT + 1
        return r
    raise AssertionError(how)


def _word(name):
    return r"(?<![\w])" + re.escape(name) + r"(?![\w])"


def _binding_cases():
    """case id -> (entry, cell, path, breaking or ("set", value), regex the message must hold or None)."""
    cases = {}
    for entry, table in (("forward", FWD_ARRAYS), ("backward", BWD_ARRAYS)):
        for cell in CELLS:
            for path, (name, required, written) in table.items():
                if (name in _LSTM_ONLY and cell != "lstm") or (name in _GRU_ONLY and cell != "gru"):
                    continue
                hows = ["f64", "shape"] + (["none"] if required else []) + (["readonly"] if written else [])
                if name in _KEY_ARRAYS:
                    hows += ["ndim", "list", "nc"]
                if name == "lengths":
                    hows = ["int64", "range", "shape", "ndim", "list", "nc"]
                for how in hows:
                    rx = _word(name)
                    if name == "x" and how in ("none", "list"):
                        rx = None  # pybind11's "incompatible function arguments"
                    elif name == "x" and how == "shape":
                        rx = r"(?<![\w])x(?![\w])|weight_ih"  # I is read from x
                    cases[f"{entry}-{cell}-{name.replace(' ', '_')}-{how}"] = (entry, cell, path, how, rx)
            # spec entries, dict arguments, other scalars
            own = {"lstm": [_core.CellKind.lstm], "gru": [_core.CellKind.gru],
                   "rnn": [_core.CellKind.rnn_tanh, _core.CellKind.rnn_relu]}[cell]
            for kind in _core.CellKind.__members__.values():
                if kind not in own:
                    cases[f"{entry}-{cell}-spec_kind-{kind.name}"] = (entry, cell, ("spec", "kind"), ("set", kind),
                                                                       None)
            cases[f"{entry}-{cell}-spec_kind-99"] = (entry, cell, ("spec", "kind"), ("set", 99), r"kind.*99")
            cases[f"{entry}-{cell}-spec_kind-str"] = (entry, cell, ("spec", "kind"), ("set", "lstm"), r"kind")
            cases[f"{entry}-{cell}-threads-str"] = (entry, cell, ("threads",), ("set", "2"), r"threads")
            cases[f"{entry}-{cell}-threads-huge"] = (entry, cell, ("threads",), ("set", 2 ** 40), r"threads")
            cases[f"{entry}-{cell}-step0--1"] = (entry, cell, ("step0",), ("set", -1), r"step0.*-1")
            cases[f"{entry}-{cell}-spec_hidden-0"] = (entry, cell, ("spec", "hidden"), ("set", 0), r"hidden")
            cases[f"{entry}-{cell}-spec_hidden-1.5"] = (entry, cell, ("spec", "hidden"), ("set", 1.5), r"hidden")
            cases[f"{entry}-{cell}-spec_hidden-H+1"] = (entry, cell, ("spec", "hidden"), ("set", BH + 1), None)
            cases[f"{entry}-{cell}-spec_batch_first-True"] = (entry, cell, ("spec", "batch_first"), ("set", True),
                                                              None)
            cases[f"{entry}-{cell}-spec_reverse-1"] = (entry, cell, ("spec", "reverse"), ("set", 1), r"reverse")
            cases[f"{entry}-{cell}-spec-tuple"] = (entry, cell, ("spec",), ("set", (0, BH)), r"spec")
            cases[f"{entry}-{cell}-weights-no_weight_hh"] = (entry, cell, ("weights", "weight_hh"), ("del",),
                                                             r"weight_hh")
            cases[f"{entry}-{cell}-weights-unknown"] = (entry, cell, ("weights", "weight_hx"), ("set", None),
                                                        r"weights.*weight_hx")
            cases[f"{entry}-{cell}-weights-None"] = (entry, cell, ("weights",), ("set", None), r"weights")
            cases[f"{entry}-{cell}-weights-tuple"] = (entry, cell, ("weights",), ("values",), r"weights")
            cases[f"{entry}-{cell}-tape-no_hprev"] = (entry, cell, ("tape", "hprev"), ("del",), r"tape hprev")
            cases[f"{entry}-{cell}-tape-int"] = (entry, cell, ("tape",), ("set", 5), r"tape")
            cases[f"{entry}-{cell}-tape-tuple"] = (entry, cell, ("tape",), ("values",), r"tape")
            if entry == "backward":
                cases[f"{entry}-{cell}-tape-None"] = (entry, cell, ("tape",), ("set", None), r"tape")
                cases[f"{entry}-{cell}-grads-no_weight_ih"] = (entry, cell, ("grads", "weight_ih"), ("del",),
                                                               r"grad weight_ih")
                cases[f"{entry}-{cell}-grads-None"] = (entry, cell, ("grads",), ("set", None), r"grads")
                cases[f"{entry}-{cell}-dx_accumulate-str"] = (entry, cell, ("dx_accumulate",), ("set", "yes"),
                                                              r"dx_accumulate")
            if cell == "lstm":
                cases[f"{entry}-{cell}-spec_peephole-True"] = (entry, cell, ("spec", "peephole"), ("set", True),
                                                               r"weight_ch")
    return cases


BINDING_CASES = _binding_cases()
# direction entries of spec: the message must show the values that came
DIRECTION_CASES = {f"{e}-lstm-spec_{key}-{v}": (e, "lstm", ("spec", key), ("set", v), None)
                   for e in ("forward", "backward") for key, v in (("num_dirs", 3), ("num_dirs", 0), ("dir", 1),
                                                                    ("dir", -1))}
ALL_BINDING_CASES = {**BINDING_CASES, **DIRECTION_CASES}


def _run_one_binding_case(case_id, captured):
    """Break one argument of the captured call; return (exception type, message) or None."""
    entry, cell, path, how, _ = ALL_BINDING_CASES[case_id]
    fwd, bwd = captured[cell]
    args, fn = (fwd, _core.forward_f32) if entry == "forward" else (bwd, _core.backward_f32)
    _call(fn, _deep_copy(args))  # the unbroken call works
    args = _deep_copy(args)
    if how == ("del",):
        args = _delete(args, path)
    elif how == ("values",):
        args = _replace(args, path, tuple(_get(args, path).values()))
    else:
        value = how[1] if isinstance(how, tuple) and how[0] == "set" else _break(_get(args, path), how)
        args = _replace(args, path, value)
    try:
        _call(fn, args)
    except Exception as e:  # noqa: BLE001 - the type is what is being tested
        return type(e).__name__, str(e)[:2000]
    return None


def _binding_worker(case_ids):
    """Child process: run the cases in order, one JSON line each, flushed."""
    captured = {}
    for cid in case_ids:
        cell = ALL_BINDING_CASES[cid][1]
        if cell not in captured:
            captured[cell] = _capture(cell)
        print(json.dumps({"start": cid}), flush=True)
        r = _run_one_binding_case(cid, captured)
        out = {"id": cid, "raised": r is not None}
        if r is not None:
            out["type"], out["msg"] = r
        print(json.dumps(out), flush=True)


_BINDING_RESULTS = None
_WORKER_TIMEOUT = 120  # seconds for one child process


def _run_binding_cases():
    """Run every binding case in child processes; a case during which the child
    died (signal, abort) or hung is recorded as such, and the rest go on in a
    fresh child."""
    global _BINDING_RESULTS
    if _BINDING_RESULTS is not None:
        return _BINDING_RESULTS
    results = {}
    pending = list(ALL_BINDING_CASES)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(rc.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    while pending:
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--binding-worker", *pending],
                                  capture_output=True, text=True, timeout=_WORKER_TIMEOUT, env=env)
            out, err, code = proc.stdout, proc.stderr, proc.returncode
            died = f"crashed (exit status {code})"
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            code, died = None, f"hung (no answer in {_WORKER_TIMEOUT} s)"
        started = None
        for line in out.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "start" in rec:
                started = rec["start"]
            else:
                results[rec["id"]] = rec
                started = None
        if code == 0 and all(c in results for c in pending):
            break
        if started is None:  # died outside any case: report it on all that are left
            for c in pending:
                results.setdefault(c, {"id": c, "died": f"worker failed: {died}\n{err[-2000:]}"})
            break
        results[started] = {"id": started, "died": f"{died}\n{err[-2000:]}"}
        pending = [c for c in pending if c not in results]
    _BINDING_RESULTS = results
    return results


def _describe(entry, path, how):
    what = f"{path[0]}[{path[1]!r}]" if len(path) == 2 else path[0]
    return f"_core.{entry}_f32(... {what} <- {how!r} ...)"


@pytest.mark.parametrize("case_id", list(BINDING_CASES))
def test_private_binding_rejects_bad_argument(case_id):
    entry, cell, path, how, rx = BINDING_CASES[case_id]
    rec = _run_binding_cases()[case_id]
    call = f"{_describe(entry, path, how)} [{cell}]"
    assert "died" not in rec, f"{call} {rec.get('died')}"
    assert rec["raised"], f"{call} accepted the bad argument silently"
    assert rec["type"] in ("ValueError", "TypeError"), f"{call} raised {rec['type']}: {rec['msg']}"
    if rx is not None:
        assert re.search(rx, rec["msg"]), f"{call}: message does not name the argument: {rec['msg']!r}"


@pytest.mark.parametrize("case_id", list(DIRECTION_CASES))
def test_private_binding_direction_message_shows_values(case_id):
    entry, cell, path, (_, value), _ = DIRECTION_CASES[case_id]
    key = path[1]
    rec = _run_binding_cases()[case_id]
    call = _describe(entry, path, value)
    assert "died" not in rec, f"{call} {rec.get('died')}"
    assert rec["raised"] and rec["type"] == "ValueError", f"{call}: {rec}"
    assert re.search(rf"\b{key}\b", rec["msg"]) and re.search(rf"(?<![\w-]){value}(?!\d)", rec["msg"]), \
        f"{call}: message should name {key} and show {value}: {rec['msg']!r}"


@pytest.mark.parametrize("cell", list(CELLS))
def test_private_binding_layout_is_known(cell):
    # if this fails, bindings.cpp changed its argument layout: update the tables above
    fwd, bwd = _capture(cell)
    assert set(fwd) == FWD_KEYS and set(bwd) == BWD_KEYS
    assert set(fwd["spec"]) == SPEC_KEYS and fwd["spec"]["hidden"] == BH
    assert fwd["spec"]["num_dirs"] == 1 and fwd["spec"]["dir"] == 0
    assert set(fwd["weights"]) == set(_W) and set(bwd["weights"]) == set(_W) and set(bwd["grads"]) == set(_W)
    tape_keys = {"gates", "hprev"} | ({"c"} if cell == "lstm" else set()) | ({"extra"} if cell == "gru" else set())
    assert set(fwd["tape"]) == tape_keys and set(bwd["tape"]) == tape_keys
    assert isinstance(bwd["dx_accumulate"], bool)
    for entry, args, table in (("forward", fwd, FWD_ARRAYS), ("backward", bwd, BWD_ARRAYS)):
        for path, (name, _, _) in table.items():
            used = not ((name in _LSTM_ONLY and cell != "lstm") or (name in _GRU_ONLY and cell != "gru"))
            v = _get(args, path) if path[0] not in ("tape",) or path[1] in tape_keys else None
            assert isinstance(v, np.ndarray) == used, f"{entry} {path} ({name}): {type(v).__name__}"
    # and the captured call reproduces the layer
    y = np.empty_like(fwd["y"])
    _call(_core.forward_f32, _replace(_deep_copy(fwd), ("y",), y))
    layer = CELLS[cell](BI, BH, seed=0)
    h = np.random.default_rng(1).standard_normal((1, BB, BH)).astype(np.float32)
    x = np.random.default_rng(0).standard_normal((BT, BB, BI)).astype(np.float32)
    y_layer, _ = layer(x, state=(h, h.copy()) if cell == "lstm" else h, lengths=[BT, 3, 1])
    assert_allclose(y, y_layer, rtol=1e-6, atol=1e-6)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--binding-worker":
    _binding_worker(sys.argv[2:])
