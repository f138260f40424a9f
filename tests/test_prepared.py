"""The prepared inference call (a one-layer layer's repeated ``layer(x, state)``,
the streamed step's path): it must give what the checked path gives, notice
replaced parameters, and leave everything it cannot take to the checked path,
errors included."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core

from _helpers import CELL_IDS, assert_close, cast_state, flat, fix_h, make_pair, ref_forward, ref_state

HISTORY = ["skip_1_3", "skip_2", "clockwork"]  # states (1, max_delay, B, H) and (h, step)
PREPARED = [c for c in CELL_IDS if c not in HISTORY]  # state (1, B, H), or lstm's (h, c)


def _prepared(layer):
    return isinstance(layer._plan, (_core.Prepared_f32, _core.Prepared_f64))


def _stream(layer, x, st, chunk, batch_first):
    """x (T, B, I) through layer, chunk steps a call with the state carried:
    the outputs (T, B, H) and the last state."""
    ys = []
    for t0 in range(0, x.shape[0], chunk):
        xc = x[t0:t0 + chunk]
        if batch_first:
            xc = np.ascontiguousarray(xc.transpose(1, 0, 2))
        y, st = layer(xc, st)
        ys.append(y.transpose(1, 0, 2) if batch_first else y)
    return np.concatenate(ys), st


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell_id", PREPARED)
def test_streamed_steps_match_reference(cell_id, batch_first, dtype):
    """Step by step with the state carried (T=1 and T=3 chunks, batch 1 and 3),
    against the numpy reference run over the whole sequence."""
    I, H, B, T = 5, 19, 3, 7
    layer, params = make_pair(cell_id, I, H, dtype=dtype, batch_first=batch_first)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    s0 = ref_state(cell_id, H, B, 1, False)
    y_ref, s_ref, _ = ref_forward(cell_id, params, x, s0, None, H, 1, False)
    for chunk in (1, 3):
        for b in (slice(0, 1), slice(0, B)):
            st = cast_state(s0, dtype)
            st = tuple(s[:, b].copy() for s in st) if isinstance(st, tuple) else st[:, b].copy()
            y, st = _stream(layer, x[:, b].astype(dtype), st, chunk, batch_first)
            assert _prepared(layer), "the repeated call should be the prepared one"
            assert_close(y, y_ref[:, b], dtype, f"y, chunk {chunk}")
            want = s_ref if isinstance(s_ref, tuple) else (s_ref,)
            for got, w in zip(flat(st), want):
                assert got.dtype == dtype and got.shape == (1, b.stop - b.start, H)
                assert_close(got, w[:, b], dtype, f"state, chunk {chunk}")


@pytest.mark.parametrize("cell_id", PREPARED)
def test_prepared_equals_checked_path(cell_id):
    """The same call through the prepared path and through the checked one."""
    layer, _ = make_pair(cell_id, 4, 9, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    y0, s0 = layer(x)
    assert _prepared(layer)
    y1, s1 = layer(x, s0)  # prepared
    y2, s2, _ = layer.forward(x, s0)  # the checked path (training forward)
    np.testing.assert_array_equal(y1, y2)
    for a, b in zip(flat(s1), flat(s2)):
        np.testing.assert_array_equal(a, b)


def test_replaced_and_modified_params_are_seen():
    layer = rc.LSTM(3, 4)
    x = np.ones((2, 1, 3), np.float32)
    layer(x)
    y1, _ = layer(x)
    assert _prepared(layer)
    layer.params["weight_hh_l0"][...] = 0.5  # in place: the same array
    y2, _ = layer(x)
    layer.params["weight_hh_l0"] = np.zeros((16, 4), np.float32)  # replaced
    y3, _ = layer(x)
    fresh = rc.LSTM(3, 4)
    fresh.params = {k: v.copy() for k, v in layer.params.items()}
    np.testing.assert_array_equal(y3, fresh(x)[0])
    assert not np.array_equal(y1, y2) and not np.array_equal(y2, y3)
    # a replacement the checks refuse is still refused on a later call
    layer.params["weight_hh_l0"] = np.zeros((16, 5), np.float32)
    with pytest.raises(ValueError, match=r"weight_hh_l0.*\(16, 4\)"):
        layer(x)


def test_calls_it_cannot_take_go_to_the_checked_path():
    layer = rc.GRU(3, 4)
    x = np.random.default_rng(1).standard_normal((2, 1, 3))
    y64, _ = layer(x.astype(np.float32))
    layer(x.astype(np.float32))
    assert _prepared(layer)
    np.testing.assert_array_equal(layer(x)[0], y64)  # float64 input is converted
    np.testing.assert_array_equal(layer(x.astype(np.float32).tolist())[0], y64)  # a list too
    xf = np.asfortranarray(np.repeat(x.astype(np.float32), 2, axis=1))
    np.testing.assert_array_equal(layer(xf)[0][:, :1], y64)  # not C-contiguous
    h = np.zeros((1, 2, 4), np.float32)[:, ::2]  # a strided view as the state
    np.testing.assert_array_equal(layer(x.astype(np.float32), h)[0], y64)
    # and the errors are the checked path's
    with pytest.raises(ValueError, match=r"x must be \(T, B, 3\), got \(2, 1, 5\)"):
        layer(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"state must be"):
        layer(x.astype(np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(TypeError, match=r"x must be a real numeric array"):
        layer(np.zeros((2, 1, 3), bool))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 2\]"):
        layer(x.astype(np.float32), lengths=np.array([3]))


def test_lstm_state_forms():
    layer = rc.LSTM(2, 3)
    x = np.ones((1, 1, 2), np.float32)
    _, st = layer(x)
    y_tuple, _ = layer(x, st)
    y_list, _ = layer(x, list(st))
    np.testing.assert_array_equal(y_tuple, y_list)
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\)"):
        layer(x, st[0])


def _rows(cell_id, state, b):
    """The state of batch rows b."""
    if cell_id == "clockwork":
        return (state[0][:, b].copy(), state[1])
    return state[:, :, b].copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell_id", HISTORY)
def test_streamed_steps_with_history_or_clock_match_reference(cell_id, batch_first, dtype):
    """As above for skip (the history of max_delay states is the state) and
    clockwork (the state carries the step count, started out of phase)."""
    I, H, B, T = 5, fix_h(cell_id, 19), 3, 9
    layer, params = make_pair(cell_id, I, H, dtype=dtype, batch_first=batch_first)
    x = np.random.default_rng(4).standard_normal((T, B, I))
    s0 = ref_state(cell_id, H, B, 1, False)
    y_ref, s_ref, _ = ref_forward(cell_id, params, x, s0, None, H, 1, False)
    for chunk in (1, 3):
        for b in (slice(0, 1), slice(0, B)):
            st = _rows(cell_id, cast_state(s0, dtype), b)
            y, st = _stream(layer, x[:, b].astype(dtype), st, chunk, batch_first)
            assert _prepared(layer), "the repeated call should be the prepared one"
            assert_close(y, y_ref[:, b], dtype, f"y, chunk {chunk}")
            want = _rows(cell_id, s_ref, b)
            if cell_id == "clockwork":
                assert type(st) is tuple and type(st[1]) is int and st[1] == want[1] == s0[1] + T
                st, want = st[0], want[0]
            assert st.dtype == dtype and st.shape == want.shape
            assert_close(st, want, dtype, f"state, chunk {chunk}")


@pytest.mark.parametrize("cell_id", HISTORY)
def test_history_or_clock_states_it_cannot_take_go_to_the_checked_path(cell_id):
    """A state of another form is converted or refused by the checked path,
    as without the prepared call."""
    layer, _ = make_pair(cell_id, 3, fix_h(cell_id, 6), dtype=np.float32)
    x = np.ones((2, 2, 3), np.float32)
    _, st = layer(x)
    assert _prepared(layer)
    if cell_id == "clockwork":
        h, step = st
        y_ref, st_ref = layer(x, (h, step))
        for other in ((h.astype(np.float64), step), (h, np.int64(step)), [h, step]):
            y, st2 = layer(x, other)  # converted by the checked path (or taken as it is)
            np.testing.assert_array_equal(y, y_ref)
            assert st2[1] == st_ref[1] == step + 2
        with pytest.raises(ValueError, match=r"step"):
            layer(x, (h, -1))
        with pytest.raises(TypeError, match=r"tuple \(h, step\)"):
            layer(x, h)
    else:
        y_ref, st_ref = layer(x, st)
        y, _ = layer(x, st.astype(np.float64))  # converted
        np.testing.assert_array_equal(y, y_ref)
        with pytest.raises(ValueError, match=r"state must be \(1, [23], 2, 6\), got \(1, 1, 2, 6\)"):
            layer(x, st[:, :1])


def test_deep_layers_and_bidirectional_are_not_prepared():
    for layer in (rc.LSTM(3, 4, num_layers=2), rc.GRU(3, 4, bidirectional=True)):
        x = np.ones((2, 1, 3), np.float32)
        layer(x)
        layer(x)
        assert layer._plan is None


def test_copied_and_pickled_layers_prepare_their_own_call():
    layer = rc.LSTM(3, 4)
    x = np.ones((2, 1, 3), np.float32)
    layer(x)
    y, st = layer(x)
    assert _prepared(layer)
    shallow = copy.copy(layer)  # shares params, and so the prepared call
    np.testing.assert_array_equal(shallow(x)[0], y)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert other._plan is None
        np.testing.assert_array_equal(other(x)[0], y)
        np.testing.assert_array_equal(other(x)[0], y)
        assert _prepared(other)
    # the copy's weights are its own
    twin = copy.deepcopy(layer)
    twin(x)
    twin.params["weight_ih_l0"][...] = 0
    np.testing.assert_array_equal(layer(x)[0], y)


def test_prepared_object_refuses_bad_construction():
    layer = rc.LSTM(3, 4)
    layer(np.ones((1, 1, 3), np.float32))
    spec = layer._spec(0)
    tup = layer._kernel_weights(0, 0)
    with pytest.raises(ValueError, match="input_size"):
        _core.Prepared_f32(spec, 0, tup, [], [])
    with pytest.raises(ValueError, match="weight_ih"):
        _core.Prepared_f32(spec, 5, tup, [], [])
    with pytest.raises(TypeError):
        _core.Prepared_f64(spec, 3, tup, [], [])
    with pytest.raises(ValueError, match="names and arrays"):
        _core.Prepared_f32(spec, 3, tup, ["a"], [])
    plan = _core.Prepared_f32(spec, 3, tup, [], [])
    assert plan(np.ones((1, 1, 3), np.float32), None, "not a dict", 1) is None


@pytest.mark.parametrize("name", rc.available_isas())
@pytest.mark.parametrize("H", [1, 7, 16, 33])
def test_direct_product_every_isa(name, H):
    """Short calls (batch <= 4, T*B <= 32) read W_hh row by row, reducing a
    vector's worth of rows at a time: each ISA, widths around the vector size."""
    from _helpers import isa
    for dtype in (np.float32, np.float64):
        layer, params = make_pair("lstm", 6, H, dtype=dtype)
        x = np.random.default_rng(H).standard_normal((4, 2, 6))
        s0 = ref_state("lstm", H, 2, 1, False)
        y_ref, _, _ = ref_forward("lstm", params, x, s0, None, H, 1, False)
        with isa(name):
            y, _ = layer(x.astype(dtype), cast_state(s0, dtype))
        assert_close(y, y_ref, dtype, f"{name} H={H}")
