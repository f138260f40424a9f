"""The multi-time-scale cells (Deep Learning 10.9): identities with the Elman
cell, alpha and timescales, skip histories, clockwork schedules and zero
blocks, and their argument errors. (Reference, gradient, chunk, ISA and
thread checks of these cells live in test_layers.py with the others.)"""
from __future__ import annotations

import numpy as np
import pytest

import rnncore as rc

rng0 = np.random.default_rng(0)
X = rng0.uniform(-1, 1, (9, 4, 3))


def _elman_twin(layer):
    """An rc.RNN(tanh) holding the layer's weights (the delay-1 matrix for skip)."""
    twin = rc.RNN(3, layer.hidden_size, num_layers=layer.num_layers, dtype=layer.dtype)
    for name in twin.params:
        src = name.replace("weight_hh_l", "weight_hh_d1_l") if isinstance(layer, rc.SkipRNN) else name
        twin.params[name][...] = layer.params[src]
    return twin


def _grads(layer, x):
    y, st, tape = layer.forward(x)
    layer.zero_grad()
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, _ = layer.backward(tape, dy)
    return y, dx, layer.grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda dt: rc.LeakyRNN(3, 10, num_layers=2, alpha=0.0, dtype=dt, seed=1),
    lambda dt: rc.SkipRNN(3, 10, num_layers=2, delays=(1,), dtype=dt, seed=1),
    lambda dt: rc.ClockworkRNN(3, 10, num_layers=2, periods=(1,), dtype=dt, seed=1),
], ids=["leaky-alpha0", "skip-delays1", "clockwork-periods1"])
def test_identity_with_elman_tanh(make, dtype):
    layer = make(dtype)
    twin = _elman_twin(layer)
    x = X.astype(dtype)
    y, dx, g = _grads(layer, x)
    y2, dx2, g2 = _grads(twin, x)
    np.testing.assert_array_equal(y, y2)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(dx, dx2, rtol=tol, atol=tol)
    for name in g2:
        src = name.replace("weight_hh_l", "weight_hh_d1_l") if isinstance(layer, rc.SkipRNN) else name
        np.testing.assert_allclose(g[src], g2[name], rtol=tol, atol=tol, err_msg=name)


def test_leaky_alpha_forms():
    a = rc.LeakyRNN(2, 4, alpha=0.3)
    np.testing.assert_allclose(a.params["alpha_l0"], 0.3, rtol=1e-6)
    per_unit = np.array([0.0, 0.5, 0.9, 0.99])
    b = rc.LeakyRNN(2, 4, alpha=per_unit, dtype=np.float64, bidirectional=True)
    np.testing.assert_array_equal(b.params["alpha_l0"], per_unit)
    np.testing.assert_array_equal(b.params["alpha_l0_reverse"], per_unit)
    c = rc.LeakyRNN(2, 5, timescales=(1, 16), dtype=np.float64)
    tau = 1.0 / (1.0 - c.params["alpha_l0"])
    np.testing.assert_allclose(tau, [1, 2, 4, 8, 16], rtol=1e-12)  # geometric spacing
    assert "alpha_l0" in c.grads


def test_leaky_alpha_frozen_unless_learned_and_kept_in_range():
    fixed = rc.LeakyRNN(2, 4, alpha=0.5)
    assert fixed.frozen_params() == {"alpha_l0"}
    learned = rc.LeakyRNN(2, 4, alpha=0.5, learn_alpha=True)
    assert learned.frozen_params() == set()
    learned.params["alpha_l0"][...] = [-0.2, 0.5, 1.0, 3.0]
    learned.project_params()
    a = learned.params["alpha_l0"]
    assert np.all(a >= 0) and np.all(a < 1)
    assert a[1] == np.float32(0.5)


def test_leaky_alpha_gradient_drives_learning():
    # one SGD step on alpha along -dL/dalpha lowers the loss
    layer = rc.LeakyRNN(3, 6, alpha=0.5, learn_alpha=True, dtype=np.float64, seed=2)
    x = X
    target = np.random.default_rng(3).uniform(-0.5, 0.5, (9, 4, 6))

    def loss():
        y, _ = layer(x)
        return 0.5 * float(np.sum((y - target) ** 2))

    y, _, tape = layer.forward(x)
    layer.zero_grad()
    layer.backward(tape, y - target)
    before = loss()
    layer.params["alpha_l0"] -= 1e-3 * layer.grads["alpha_l0"]
    assert loss() < before


def test_skip_initial_history_is_honoured():
    layer = rc.SkipRNN(3, 5, delays=(1, 3), dtype=np.float64, seed=0)
    hist = np.random.default_rng(4).uniform(-1, 1, (1, 3, 4, 5))
    y0, _ = layer(X)
    y1, st = layer(X, hist)
    assert st.shape == (1, 3, 4, 5)
    assert not np.allclose(y0[:3], y1[:3])   # the first three steps see the history
    # the oldest history entry only reaches the output through delay 3 at t=0
    hist2 = hist.copy()
    hist2[0, 0] += 0.1
    y2, _ = layer(X, hist2)
    assert not np.allclose(y1[0], y2[0])
    hist3 = hist.copy()
    hist3[0, 1] += 0.1                        # h_{-2}: read by delay 3 at t=1 only
    y3, _ = layer(X, hist3)
    np.testing.assert_array_equal(y1[0], y3[0])
    assert not np.allclose(y1[1], y3[1])


def test_skip_final_history_is_the_last_states():
    layer = rc.SkipRNN(3, 5, delays=(2, 4), dtype=np.float64, seed=0)
    y, st = layer(X, lengths=[9, 2, 5, 1])
    np.testing.assert_array_equal(st[0, :, 0], y[5:9, 0])
    np.testing.assert_array_equal(st[0, 2:, 1], y[0:2, 1])
    np.testing.assert_array_equal(st[0, :2, 1], 0)          # from the zero initial history
    np.testing.assert_array_equal(st[0, 3, 3], y[0, 3])


def test_clockwork_groups_rest_between_updates():
    layer = rc.ClockworkRNN(3, 6, periods=(1, 2, 3), dtype=np.float64, seed=0)
    y, (h, step) = layer(X)
    assert step == 9
    g1, g2, g3 = y[:, :, 0:2], y[:, :, 2:4], y[:, :, 4:6]
    assert np.all(g1[1:] != g1[:-1])
    for t in range(1, 9):
        same2 = np.array_equal(g2[t], g2[t - 1])
        same3 = np.array_equal(g3[t], g3[t - 1])
        assert same2 == (t % 2 != 0), t
        assert same3 == (t % 3 != 0), t
    # a streamed continuation stays in phase: step 9 updates periods 1 and 3, not 2
    y2, (_, step2) = layer(X[:2], (h, step))
    assert step2 == 11
    np.testing.assert_array_equal(y2[0, :, 2:4], y[-1, :, 2:4])
    assert not np.array_equal(y2[0, :, 4:6], y[-1, :, 4:6])


def test_clockwork_zero_blocks_stay_zero_after_update():
    layer = rc.ClockworkRNN(3, 12, periods=(1, 2, 4), num_layers=2, bidirectional=True, seed=0)
    mask = layer.block_mask()
    for name, p in layer.params.items():
        if name.startswith("weight_hh"):
            assert np.all(p[~mask] == 0) and np.any(p[mask] != 0)
    y, _, tape = layer.forward(X.astype(np.float32))
    layer.backward(tape, np.ones_like(y))
    for name, g in layer.grads.items():
        if name.startswith("weight_hh"):
            assert np.all(g[~mask] == 0), name
            assert np.any(g[mask] != 0), name
            layer.params[name] -= 0.1 * g                           # an SGD step
            assert np.all(layer.params[name][~mask] == 0), name


def test_clockwork_disallowed_entries_have_no_effect():
    layer = rc.ClockworkRNN(3, 6, periods=(1, 2, 3), dtype=np.float64, seed=0)
    y0, _ = layer(X)
    layer.params["weight_hh_l0"][~layer.block_mask()] = 5.0
    y1, _ = layer(X)
    np.testing.assert_array_equal(y0, y1)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(delays=()), ValueError, "delays must be a non-empty"),
    (dict(delays=(1, 0)), ValueError, r"delays\[i\] must be >= 1, got 0"),
    (dict(delays=(-2,)), ValueError, r"delays\[i\] must be >= 1, got -2"),
    (dict(delays=(1, 2, 1)), ValueError, r"delays must not repeat, got \(1, 2, 1\)"),
    (dict(delays=(1.5,)), TypeError, r"delays\[i\] must be an int, got float"),
])
def test_skip_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rc.SkipRNN(3, 4, **kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(periods=(1, 2, 4)), ValueError, "3 groups do not divide hidden_size=8"),
    (dict(periods=()), ValueError, "periods must be a non-empty"),
    (dict(periods=(2, 1)), ValueError, r"strictly increasing, got \(2, 1\)"),
    (dict(periods=(1, 0)), ValueError, r"periods\[i\] must be >= 1, got 0"),
])
def test_clockwork_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rc.ClockworkRNN(3, 8, **kwargs)


def test_clockwork_state_errors():
    layer = rc.ClockworkRNN(3, 4, periods=(1, 2))
    h = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, step\)"):
        layer(X.astype(np.float32), h)
    with pytest.raises(ValueError, match=r"state\[1\] \(step\) must be >= 0, got -1"):
        layer(X.astype(np.float32), (h, -1))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(alpha=1.0), ValueError, r"alpha must be in \[0, 1\), got 1.0"),
    (dict(alpha=-0.1), ValueError, r"alpha must be in \[0, 1\), got -0.1"),
    (dict(alpha=np.zeros(3)), ValueError, r"alpha must be a scalar or \(4,\), got \(3,\)"),
    (dict(alpha="x"), TypeError, "alpha must be a real number"),
    (dict(timescales=(0.5, 10)), ValueError, "1 <= tau_min <= tau_max"),
    (dict(timescales=(10, 2)), ValueError, "1 <= tau_min <= tau_max"),
    (dict(alpha=0.5, timescales=(1, 2)), ValueError, "not both"),
    (dict(learn_alpha="yes"), TypeError, "learn_alpha must be a bool"),
])
def test_leaky_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rc.LeakyRNN(3, 4, **kwargs)


def test_skip_state_shape_error_names_history():
    layer = rc.SkipRNN(3, 4, delays=(1, 3))
    with pytest.raises(ValueError, match=r"state must be 4-D \(L\*D, max_delay, B, H\) = \(1, 3, 4, 4\), got \(1, 4, 4\)"):
        layer(X.astype(np.float32), np.zeros((1, 4, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_skip_batched_delay_products_match_the_reference(B, dtype):
    # Small batches take a delay's products d steps at a time (one tile of
    # d*B rows at every multiple of d); larger d*B do not. Delays (1, 3, 5,
    # 8) with B = 1..3 mix both, T = 13 is no multiple of any delay, and
    # lengths, the reverse direction, an initial history, every ISA and a
    # team of two are all on the batched path.
    import _reference as ref
    from _helpers import assert_close, isa, threads
    delays, I, H, T = (1, 3, 5, 8), 3, 40, 13
    layer = rc.SkipRNN(I, H, delays=delays, bidirectional=True, dtype=dtype)
    params = ref.random_params("skip", I, H, bidirectional=True, rng=2, delays=delays)
    for k, v in params.items():
        layer.params[k][...] = v
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (T, B, I))
    hist = rng.uniform(-1, 1, (2, 8, B, H))
    lengths = [T, 7, 10][:B]
    want_y, want_h, _ = ref.forward("skip", params, x, hist, lengths, hidden_size=H, num_layers=1,
                                 bidirectional=True, delays=delays)
    for name in rc.available_isas():
        for n in (1, 2):
            with isa(name), threads(n):
                y, h = layer(x.astype(dtype), hist.astype(dtype), lengths=lengths)
            assert_close(y, want_y, dtype, f"y {name} {n} threads")
            assert_close(h, want_h, dtype, f"history {name} {n} threads")
