"""rnncore.diagnostics: gradient flow through time, decay lags, time scales and
the plot.

The norms gradient_flow reads from the C++ BPTT (``backward(..., dh=)``) are
checked against an independent path: the numpy reference (tests/_reference.py)
run on the sequence split at step t, whose suffix's dL/d(initial state) is
dL/dh_t. The plot tests need matplotlib, an optional extra
(``pip install 'rnncore[plot]'``), and skip without it.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

import rnncore as rc
from rnncore import diagnostics as dg

try:
    import _reference as ref
    from _helpers import GATED, fix_h, make_pair
except ImportError:  # --import-mode=importlib does not put tests/ on sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _reference as ref
    from _helpers import GATED, fix_h, make_pair

CELL_IDS = [c[0] for c in GATED]
REF = {c[0]: (c[1], c[2]) for c in GATED}


def _unit(shape, axis=-1, seed=0):
    v = np.random.default_rng(seed).standard_normal(shape)
    return v / np.linalg.norm(v, axis=axis, keepdims=True)


def _synthetic(T, B, D, H, loss, seed):
    """gradient_flow's documented synthetic dL/dy, (T, B, D*H), full lengths."""
    dy = np.zeros((T, B, D, H))
    if loss == "last":
        v = _unit((B, D, H), seed=seed)
        dy[-1, :, 0] = v[:, 0]
        if D == 2:
            dy[0, :, 1] = v[:, 1]
    else:
        dy[...] = _unit((T, B, D, H), seed=seed)
    return dy.reshape(T, B, D * H)


def _ref_split(cell_id, params, x, dy, t, H):
    """dL/dh_t (B, H) by the reference alone: run x[:t+1], then x[t+1:] from
    its final state; the suffix's dstate0 (its h part; for skip the newest
    history entry, which is h_t) is the gradient reaching h_t through the
    future, to which dy_t adds the direct part."""
    rname, rkw = REF[cell_id]
    kw = dict(hidden_size=H, **rkw)
    _, state, _ = ref.forward(rname, params, x[:t + 1], **kw)
    direct = dy[t]
    if t == x.shape[0] - 1:
        return direct
    _, _, cache = ref.forward(rname, params, x[t + 1:], state, **kw)
    _, ds0, _ = ref.backward(cache, dy[t + 1:])
    h = ds0[0] if isinstance(ds0, tuple) else ds0   # lstm (h, c), clockwork (h, step)
    h = h[0]                                        # the one layer and direction
    if rname == "skip":
        h = h[-1]                                   # newest entry of the history
    return direct + h


# -- the norms are BPTT's dL/dh_t ---------------------------------------------

@pytest.mark.parametrize("loss", ["last", "all"])
@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_norms_equal_reference_split_sequence(cell_id, loss):
    T, B, I = 14, 3, 2
    H = fix_h(cell_id, 5)
    layer, params = make_pair(cell_id, I, H, dtype=np.float64, seed=3)
    x = np.random.default_rng(4).uniform(-1, 1, (T, B, I))
    flow = dg.gradient_flow(layer, x, loss=loss, seed=7)
    (key,) = flow
    assert key == f"0:{type(layer).__name__}"
    norms = flow[key]
    assert norms.shape == (T,) and norms.dtype == np.float64
    dy = _synthetic(T, B, 1, H, loss, seed=7)
    for t in (0, 1, 5, 9, T - 2, T - 1):
        g = _ref_split(cell_id, params, x, dy, t, H)
        assert_allclose(norms[t], np.linalg.norm(g, axis=1).mean(), rtol=1e-9, err_msg=f"t={t}")
    if loss == "last":
        assert norms[-1] == pytest.approx(1.0, abs=1e-12)  # dL/dh_T-1 is the unit vector itself


def test_user_dy_and_float32():
    T, B, I, H = 20, 4, 3, 6
    layer64, _ = make_pair("lstm", I, H, dtype=np.float64, seed=1)
    layer32, _ = make_pair("lstm", I, H, dtype=np.float32, seed=1)
    x = np.random.default_rng(2).uniform(-1, 1, (T, B, I))
    dy = np.random.default_rng(3).standard_normal((T, B, H))
    a = dg.gradient_flow(layer64, x, dy=dy)["0:LSTM"]
    b = dg.gradient_flow(layer32, x.astype(np.float32), dy=dy)["0:LSTM"]
    assert b.dtype == np.float64
    assert_allclose(b, a, rtol=1e-4)
    # the synthetic loss is the documented dy
    assert_allclose(dg.gradient_flow(layer64, x, seed=11)["0:LSTM"],
                    dg.gradient_flow(layer64, x, dy=_synthetic(T, B, 1, H, "last", 11))["0:LSTM"],
                    rtol=1e-12)


def test_layer_state_untouched():
    layer = rc.SkipRNN(2, 8, delays=(1, 4), num_layers=2, dropout=0.5, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (15, 3, 2)).astype(np.float32)
    for g in layer.grads.values():
        g[...] = 1.5
    grads_before = {k: id(v) for k, v in layer.grads.items()}
    rng_before = layer._rng.bit_generator.state
    a = dg.gradient_flow(layer, x)
    b = dg.gradient_flow(layer, x)
    assert all(np.all(g == 1.5) for g in layer.grads.values())
    assert {k: id(v) for k, v in layer.grads.items()} == grads_before
    assert layer.dropout == 0.5 and layer._rng.bit_generator.state == rng_before
    for k in a:                      # dropout off: deterministic
        assert_allclose(a[k], b[k], rtol=0)


def test_stacked_bidirectional_batch_first():
    T, B, I, H = 12, 3, 2, 4
    layer = rc.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (B, T, I))
    both = dg.gradient_flow(layer, x, direction="both")
    assert list(both) == ["0:GRU.l0", "0:GRU.l0.reverse", "0:GRU.l1", "0:GRU.l1.reverse"]
    fwd = dg.gradient_flow(layer, x)
    assert list(fwd) == ["0:GRU.l0", "0:GRU.l1"]
    rev = dg.gradient_flow(layer, x, direction="reverse")
    assert list(rev) == ["0:GRU.l0.reverse", "0:GRU.l1.reverse"]
    # the raw dh of the kernels, read by hand: batch-first, forward half first
    y, _, tape = layer.forward(x)
    dh = {}
    dy = _synthetic(T, B, 2, H, "last", 0).transpose(1, 0, 2)
    layer.backward(tape, np.ascontiguousarray(dy), dh=dh)
    for k in range(2):
        n = np.linalg.norm(dh[k], axis=2)                  # (B, T, D*H) -> per half below
        nf = np.linalg.norm(dh[k][:, :, :H], axis=2).mean(axis=0)
        nr = np.linalg.norm(dh[k][:, :, H:], axis=2).mean(axis=0)
        assert n.shape == (B, T)
        assert_allclose(both[f"0:GRU.l{k}"], nf, rtol=1e-12)
        assert_allclose(both[f"0:GRU.l{k}.reverse"], nr[::-1], rtol=1e-12)  # lag order
    # the top layer's halves each get a unit vector where their direction ends
    assert both["0:GRU.l1"][-1] == pytest.approx(1.0)
    assert both["0:GRU.l1.reverse"][-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no bidirectional"):
        dg.gradient_flow(rc.RNN(2, 3), np.zeros((4, 1, 2)), direction="reverse")


def test_lengths_align_end_and_step():
    T, I, H = 10, 2, 5
    layer = rc.RNN(I, H, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (T, 3, I))
    lens = np.array([10, 6, 3])
    v = _unit((3, 1, H), seed=0)[:, 0]
    end = dg.gradient_flow(layer, x, lengths=lens)["0:RNN"]
    step = dg.gradient_flow(layer, x, lengths=lens, align="step")["0:RNN"]
    # each row alone, over its own valid part, with its own unit vector at its end
    per_row = []
    for b, n in enumerate(lens):
        dy = np.zeros((n, 1, H))
        dy[-1, 0] = v[b]
        per_row.append(dg.gradient_flow(layer, x[:n, b:b + 1], dy=dy)["0:RNN"])
    for lag in range(T):
        vals = [r[-1 - lag] for r in per_row if lag < len(r)]
        assert_allclose(end[T - 1 - lag], np.mean(vals), rtol=1e-12)
    for t in range(T):
        vals = [r[t] for r in per_row if t < len(r)]
        assert_allclose(step[t], np.mean(vals), rtol=1e-12)
    assert end[-1] == pytest.approx(1.0)


# -- Sequential: the model's own loss -------------------------------------------

def test_sequential_real_loss_equals_layer_with_its_dy():
    N, T, I, H = 6, 15, 2, 7
    rec = rc.LSTM(I, H, dtype=np.float64, seed=0)
    lin = rc.Linear(H, 1, dtype=np.float64, seed=0)
    model = rc.Sequential(rec, lin)
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(-1, 1, (N, T, I)), rng.standard_normal((N, 1))
    flow = dg.gradient_flow(model, X, Y)
    assert list(flow) == ["0:LSTM"]
    # by hand: mse's dL/dpred = 2 (pred - y) / N, through the Linear to the last step
    pred = model.predict(X)
    dy = np.zeros((T, N, H))
    dy[-1] = (2 * (pred - Y) / N) @ lin.params["weight"]
    expect = dg.gradient_flow(rec, X.transpose(1, 0, 2), dy=dy)["0:LSTM"]
    assert_allclose(flow["0:LSTM"], expect, rtol=1e-10)
    assert np.all(model.grads["1.weight"] == 0)          # grads untouched


def test_sequential_synthetic_and_stack():
    N, T = 5, 12
    model = rc.Sequential(rc.RNN(2, 6, dtype=np.float64, seed=0), rc.Dropout(0.3, seed=0),
                          rc.LeakyRNN(6, 4, alpha=0.5, batch_first=True, dtype=np.float64, seed=1),
                          rc.Linear(4, 1, dtype=np.float64, seed=0), readout="all")
    X = np.random.default_rng(0).uniform(-1, 1, (N, T, 2))
    flow = dg.gradient_flow(model, X, loss="all")
    assert model.layers[1].p == 0.3                    # dropout off during the pass only
    assert list(flow) == ["0:RNN", "2:LeakyRNN"]
    assert all(v.shape == (T,) and np.all(np.isfinite(v)) for v in flow.values())
    Y = np.zeros((N, T, 1))
    real = dg.gradient_flow(model, X, Y, loss="mse")
    assert list(real) == ["0:RNN", "2:LeakyRNN"]
    with pytest.raises(ValueError, match="synthetic"):
        dg.gradient_flow(model, X, Y, loss="last")
    with pytest.raises(ValueError, match="Sequential"):
        dg.gradient_flow(rc.RNN(2, 3), X.transpose(1, 0, 2), Y)
    with pytest.raises(TypeError, match="recurrent"):
        dg.gradient_flow(rc.Linear(2, 3), X)


# -- what the book predicts ------------------------------------------------------

def _symmetric(H, radius, seed):
    a = np.random.default_rng(seed).standard_normal((H, H))
    s = a + a.T
    return s * (radius / np.max(np.abs(np.linalg.eigvalsh(s))))


def test_elman_decays_geometrically_at_spectral_radius_half():
    T, B, H = 60, 8, 32
    layer = rc.RNN(3, H, dtype=np.float64, seed=0)
    # symmetric W_hh: ||W_hh||_2 = its spectral radius 0.5, and tanh' <= 1, so
    # every step back shrinks each row's gradient by at least 0.5
    layer.params["weight_hh_l0"][...] = _symmetric(H, 0.5, 1)
    x = 0.1 * np.random.default_rng(0).standard_normal((T, B, 3))
    norms = dg.gradient_flow(layer, x)["0:RNN"]
    lag = norms[::-1]
    assert np.all(lag[1:40] <= 0.5 * lag[:39] * (1 + 1e-9))
    assert dg.decay_lag(norms) <= 10                   # 0.5**10 < 1e-3
    # a non-normal matrix of the same spectral radius: the rate is 0.5 in the
    # long run (fit of log norm against the lag past the first steps)
    w = np.random.default_rng(2).standard_normal((H, H))
    layer.params["weight_hh_l0"][...] = w * (0.5 / np.max(np.abs(np.linalg.eigvals(w))))
    lag = dg.gradient_flow(layer, x)["0:RNN"][::-1]
    slope = np.polyfit(np.arange(5, 45), np.log(lag[5:45]), 1)[0]
    assert np.exp(slope) <= 0.6, np.exp(slope)


def test_leaky_alpha_099_keeps_the_gradient():
    T, B, H = 101, 8, 16
    layer = rc.LeakyRNN(3, H, alpha=0.99, dtype=np.float64, seed=0)
    layer.params["weight_hh_l0"] *= 0.1
    x = 0.1 * np.random.default_rng(0).standard_normal((T, B, 3))
    norms = dg.gradient_flow(layer, x)["0:LeakyRNN"]
    assert norms[0] >= norms[-1] / 10                  # lag 100: within a factor 10
    assert dg.decay_lag(norms, 0.1) is None
    # the Elman cell (alpha = 0) with the same weights has lost it long before
    layer.params["alpha_l0"][...] = 0.0
    assert dg.decay_lag(dg.gradient_flow(layer, x)["0:LeakyRNN"]) < 20


def test_skip_of_delay_10_decays_slower_than_its_elman_twin():
    T, B, H, I = 80, 8, 16, 3
    skip = rc.SkipRNN(I, H, delays=(1, 10), dtype=np.float64, seed=0)
    elman = rc.RNN(I, H, dtype=np.float64, seed=0)
    w1 = _symmetric(H, 0.5, 1)
    skip.params["weight_hh_d1_l0"][...] = w1
    skip.params["weight_hh_d10_l0"][...] = _symmetric(H, 0.5, 2)
    elman.params["weight_hh_l0"][...] = w1
    for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
        elman.params[name][...] = skip.params[name]
    x = 0.1 * np.random.default_rng(0).standard_normal((T, B, I))
    ns = dg.gradient_flow(skip, x)["0:SkipRNN"]
    ne = dg.gradient_flow(elman, x)["0:RNN"]
    # a saw-tooth: the length-one path fades as in the Elman cell, and every
    # 10 steps the delay-10 path carries the gradient back up
    lag_s, lag_e = ns[::-1], ne[::-1]
    assert np.all(lag_s[10:41:10] > 30 * lag_s[9:40:10])
    assert dg.decay_lag(ne) <= 10 and dg.decay_lag(ne, sustained=True) == dg.decay_lag(ne)
    le, ls = dg.decay_lag(ne, sustained=True), dg.decay_lag(ns, sustained=True)
    assert ls is None or ls > 5 * le, (le, ls)
    assert lag_s[50] > 1e10 * lag_e[50]                # lag 50
    # the envelope (every 10th lag) decays per 10 steps about as the Elman cell per step
    env = lag_s[0:71:10]
    assert np.all(env[1:] <= 0.6 * env[:-1] + 1e-12)
    # with delays (1,) the skip cell is the Elman cell: the same curve
    one = rc.SkipRNN(I, H, delays=(1,), dtype=np.float64, seed=0)
    for name in one.params:
        one.params[name][...] = skip.params[name]
    assert_allclose(dg.gradient_flow(one, x)["0:SkipRNN"], ne, rtol=1e-10)


# -- decay_lag --------------------------------------------------------------------

def test_decay_lag():
    lag = np.arange(30)
    norms = (0.5 ** lag)[::-1]                         # entry T-1 is lag 0
    assert dg.decay_lag(norms) == 10                   # 0.5**10 = 9.8e-4 < 1e-3
    assert dg.decay_lag(norms, 0.3) == 2
    assert dg.decay_lag(np.ones(5)) is None
    assert dg.decay_lag(np.array([np.nan, 1e-5, 1.0, 1.0])) == 2
    saw = np.array([1e-4, 1e-2, 1e-5, 1.0])           # lags 3, 2, 1, 0
    assert dg.decay_lag(saw, 1e-3) == 1
    assert dg.decay_lag(saw, 1e-3, sustained=True) == 3
    assert dg.decay_lag(saw, 1e-1, sustained=True) == 1
    assert dg.decay_lag(np.array([1.0, 1e-5, 1.0]), sustained=True) is None
    assert dg.decay_lag(norms, sustained=True) == 10
    assert dg.decay_lag(np.r_[np.nan, np.nan, saw], 1e-3, sustained=True) == 3     # NaN: no row that long
    assert dg.decay_lag(np.array([1e-4, np.nan, 1e-2, 1.0]), 1e-3, sustained=True) == 3
    assert dg.decay_lag(np.array([1e-5, 1.0]), 1e-3, sustained=True) == 1
    with pytest.raises(ValueError, match="lag-0"):
        dg.decay_lag(np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="1-D"):
        dg.decay_lag(np.ones((2, 2)))
    with pytest.raises(ValueError, match="ratio"):
        dg.decay_lag(np.ones(3), 0)


# -- timescales -------------------------------------------------------------------

def _rho(m):
    return np.max(np.abs(np.linalg.eigvals(np.asarray(m, np.float64))))


def test_timescales_leaky():
    layer = rc.LeakyRNN(2, 6, timescales=(2, 64), num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    ts = dg.timescales(layer)
    assert list(ts) == ["l0", "l0_reverse", "l1", "l1_reverse"]
    for key, info in ts.items():
        assert_allclose(info["tau"], np.geomspace(2, 64, 6), rtol=1e-12)
        assert_allclose(info["alpha"], layer.params[f"alpha_{key}"])
        w = layer.params[f"weight_hh_{key}"]
        assert info["spectral_radius"]["weight_hh"] == pytest.approx(_rho(w), rel=1e-12)
        a = layer.params[f"alpha_{key}"]
        assert info["jacobian_radius"] == pytest.approx(_rho(np.diag(a) + np.diag(1 - a) @ w), rel=1e-12)
    assert dg.timescales(rc.LeakyRNN(2, 3, alpha=0.9))["l0"]["tau"] == pytest.approx([10, 10, 10], rel=1e-5)


def test_timescales_skip_clockwork_elman():
    skip = rc.SkipRNN(2, 5, delays=(1, 10), seed=0)
    ts = dg.timescales(skip)["l0"]
    assert ts["delays"] == (1, 10)
    assert set(ts["spectral_radius"]) == {"d1", "d10"}
    for d in (1, 10):
        assert ts["spectral_radius"][f"d{d}"] == pytest.approx(_rho(skip.params[f"weight_hh_d{d}_l0"]), rel=1e-9)
    cw = rc.ClockworkRNN(2, 6, periods=(1, 4, 16), seed=0)
    ts = dg.timescales(cw)["l0"]
    assert ts["periods"] == (1, 4, 16)
    assert ts["unit_periods"].tolist() == [1, 1, 4, 4, 16, 16]
    assert ts["spectral_radius"]["weight_hh"] == pytest.approx(_rho(cw.params["weight_hh_l0"]), rel=1e-9)
    rnn = rc.RNN(2, 4, seed=0)
    assert dg.timescales(rnn) == {"l0": {"spectral_radius": {"weight_hh": pytest.approx(
        _rho(rnn.params["weight_hh_l0"]), rel=1e-9)}}}


@pytest.mark.parametrize("cls,gates,keep", [(rc.LSTM, "ifgo", "f"), (rc.GRU, "rzn", "z")])
def test_timescales_gated(cls, gates, keep):
    H = 5
    layer = cls(2, H, seed=0, dtype=np.float64)
    ts = dg.timescales(layer)["l0"]
    w = layer.params["weight_hh_l0"]
    assert list(ts["spectral_radius"]) == list(gates)
    for j, g in enumerate(gates):
        assert ts["spectral_radius"][g] == pytest.approx(_rho(w[j * H:(j + 1) * H]), rel=1e-12)
    j = gates.index(keep)
    b = layer.params["bias_ih_l0"][j * H:(j + 1) * H] + layer.params["bias_hh_l0"][j * H:(j + 1) * H]
    assert_allclose(ts["gate_tau"], 1 + np.exp(b), rtol=1e-12)  # 1 / (1 - sigmoid(b))
    model = rc.Sequential(rc.RNN(2, 3), layer, rc.Linear(H, 1))
    assert list(dg.timescales(model)) == ["0:RNN", f"1:{cls.__name__}"]


# -- the plot ---------------------------------------------------------------------

def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"rnncore\[plot\]"):
        dg.plot_gradient_flow({"a": np.ones(3)})


def _flows():
    x = (0.3 * np.random.default_rng(0).standard_normal((40, 4, 2))).astype(np.float32)
    return {name: dg.gradient_flow(layer, x)
            for name, layer in (("Elman", rc.RNN(2, 8, seed=0)), ("leaky", rc.LeakyRNN(2, 8, seed=0)),
                                ("LSTM", rc.LSTM(2, 8, seed=0)))}


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra: pip install 'rnncore[plot]'")
    from matplotlib.image import imread
    flows = _flows()
    path = tmp_path / "flow.png"
    fig = dg.plot_gradient_flow(list(flows.items()), path, title="three cells")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    w, h = fig.get_size_inches() * 100                 # saved at dpi 100
    assert img.shape[:2] == (round(h), round(w))
    assert len(np.unique(img.reshape(-1, img.shape[-1])[:, :3], axis=0)) > 10   # not blank
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Elman", "leaky", "LSTM"]
    assert ax.get_yscale() == "log" and ax.get_title() == "three cells"
    # lines are drawn against the lag: the last step's value at x = 0
    line = ax.get_lines()[0]
    assert line.get_xdata()[0] == 0 and line.get_ydata()[0] == pytest.approx(flows["Elman"]["0:RNN"][-1])


def test_plot_dict_normalize_threshold_and_ax(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra: pip install 'rnncore[plot]'")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    stack = dg.gradient_flow(rc.GRU(2, 4, num_layers=2, seed=0), np.zeros((10, 2, 2), np.float32))
    norms = {"a": np.geomspace(1e-5, 2.0, 20), "b": np.r_[0.0, np.ones(19)], "stack": stack}
    got = dg.plot_gradient_flow(norms, tmp_path / "x.png", ax=ax, normalize=True, threshold=1e-3)
    assert got is fig
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["a", "b", "stack 0:GRU.l0", "stack 0:GRU.l1", "0.001 of lag 0"]
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(1.0)
    assert np.isnan(ax.get_lines()[1].get_ydata()[-1])    # a zero is left out of the log plot
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="1-D"):
        dg.plot_gradient_flow({"a": np.ones((2, 2))})
