"""IndRNN's own behaviour: its vector weight_hh, the paper's initialisation
and recurrent_max, units that recur only on themselves, timescales, saving.
The battery every cell passes (reference, finite differences, lengths,
threads, ISAs, fuzz) takes IndRNN from tests/_helpers.py's list."""
from __future__ import annotations

import numpy as np
import pytest

import rnncore as rc

from _helpers import threads


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_parameters_and_their_shapes(nonlinearity):
    layer = rc.IndRNN(3, 5, num_layers=2, bidirectional=True, nonlinearity=nonlinearity, seed=0)
    assert layer.params["weight_ih_l0"].shape == (5, 3)
    assert layer.params["weight_ih_l1_reverse"].shape == (5, 10)
    for s in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        assert layer.params[f"weight_hh{s}"].shape == (5,)
        assert layer.params[f"bias_ih{s}"].shape == (5,)
        assert layer.params[f"bias_hh{s}"].shape == (5,)
    assert len(layer.params) == 16
    assert "nonlinearity='" + nonlinearity + "'" in repr(layer)


def test_weight_hh_starts_uniform_in_0_1():
    layer = rc.IndRNN(2, 4000, seed=3)
    w = layer.params["weight_hh_l0"]
    assert w.min() >= 0.0 and w.max() <= 1.0
    assert abs(float(w.mean()) - 0.5) < 0.02  # U[0, 1] has mean 1/2, sd 0.29/sqrt(4000) here
    assert float(w.std()) == pytest.approx(np.sqrt(1 / 12), abs=0.02)


def test_recurrent_max_clips_at_init_and_after_every_update():
    m = 2 ** (1 / 50)
    layer = rc.IndRNN(2, 64, recurrent_max=0.5, seed=1)
    assert np.abs(layer.params["weight_hh_l0"]).max() <= 0.5
    assert (layer.params["weight_hh_l0"] == 0.5).any()  # U[0, 1] puts about half of them above
    layer = rc.IndRNN(2, 8, recurrent_max=m, seed=1)
    model = rc.Sequential(layer, rc.Linear(8, 1, seed=2))
    layer.params["weight_hh_l0"][:] = [3.0, -3.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # set from outside
    x = np.ones((2, 5, 2), np.float32)
    model.fit(x, np.full((2, 1), 5.0, np.float32), optimizer=rc.optim.SGD(lr=1e-3), epochs=1,
              batch_size=2, progress=False)
    w = layer.params["weight_hh_l0"]
    assert np.abs(w).max() <= np.float32(m)
    assert w[0] == np.float32(m) and w[1] == -np.float32(m)


@pytest.mark.parametrize("bad, err", [(0.0, ValueError), (-1.0, ValueError), (np.inf, ValueError),
                                      (np.nan, ValueError), ("1", TypeError), (True, TypeError)])
def test_recurrent_max_is_checked(bad, err):
    with pytest.raises(err, match="recurrent_max"):
        rc.IndRNN(2, 3, recurrent_max=bad)


def test_nonlinearity_is_checked():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        rc.IndRNN(2, 3, nonlinearity="sigmoid")


@pytest.mark.parametrize("nthreads", [1, 2])
def test_each_unit_recurs_only_on_itself(nthreads):
    """No input, no bias, relu: h_T = w_hh**T * h_0 unit by unit, and
    dL/dh_0 = w_hh**T for L = sum(h_T) (the per-unit control of gradients
    through time the cell is for). Several unit blocks, one per thread."""
    T, B, H = 30, 3, 40
    layer = rc.IndRNN(2, H, dtype=np.float64, seed=0)
    for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
        layer.params[name][...] = 0.0
    w = np.linspace(0.5, 1.02, H)
    layer.params["weight_hh_l0"][...] = w
    h0 = np.abs(np.random.default_rng(0).normal(size=(1, B, H))) + 0.1
    with threads(nthreads):
        y, hn, tape = layer.forward(np.zeros((T, B, 2)), h0)
        _, dh0 = layer.backward(tape, np.zeros_like(y), np.ones_like(hn))
    np.testing.assert_allclose(hn[0], w ** T * h0[0], rtol=1e-12)
    np.testing.assert_allclose(dh0[0], np.broadcast_to(w ** T, (B, H)), rtol=1e-12)
    grads = layer.grads["weight_hh_l0"]
    np.testing.assert_allclose(grads, T * w ** (T - 1) * h0[0].sum(axis=0), rtol=1e-12)


def test_a_unit_set_apart_stays_apart():
    """Changing one unit's initial state changes that unit's outputs only."""
    layer = rc.IndRNN(3, 20, nonlinearity="tanh", dtype=np.float64, seed=4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2, 3))
    h0 = rng.normal(size=(1, 2, 20))
    y0, _ = layer(x, h0)
    h1 = h0.copy()
    h1[0, :, 7] += 0.5
    y1, _ = layer(x, h1)
    changed = np.any(y0 != y1, axis=(0, 1))
    assert changed[7] and not np.delete(changed, 7).any()


def test_timescales_report_each_units_decay():
    layer = rc.IndRNN(2, 4, bidirectional=True, seed=0)
    layer.params["weight_hh_l0"][...] = [0.0, 0.5, -0.9, 1.0]
    ts = rc.diagnostics.timescales(layer)
    assert set(ts) == {"l0", "l0_reverse"}
    info = ts["l0"]
    np.testing.assert_allclose(info["recurrent_abs"], [0.0, 0.5, 0.9, 1.0], rtol=1e-7)
    np.testing.assert_allclose(info["tau"], [0.0, 1 / np.log(2), -1 / np.log(0.9), np.inf], rtol=1e-6)
    assert info["spectral_radius"] == {"weight_hh": 1.0}


def test_save_and_load_keep_the_options_and_the_results(tmp_path):
    layer = rc.IndRNN(3, 6, nonlinearity="tanh", recurrent_max=0.8, num_layers=2, dropout=0.25,
                      batch_first=True, dtype=np.float64, seed=5)
    model = rc.Sequential(layer, rc.Linear(6, 2, seed=1))
    path = tmp_path / "m.rnncore"
    model.save(path)
    back = rc.load(path)
    got = back.layers[0]
    assert type(got) is rc.IndRNN
    assert (got.nonlinearity, got.recurrent_max, got.num_layers, got.batch_first) == ("tanh", 0.8, 2, True)
    x = np.random.default_rng(2).normal(size=(2, 7, 3))
    model.eval()
    back.eval()
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_has_no_torch_equivalent():
    with pytest.raises(TypeError, match="IndRNN has no torch.nn equivalent"):
        rc.IndRNN(2, 3).to_torch()
