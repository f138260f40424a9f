"""Models and training: Linear, Sequential forward/backward, fit (clipping,
truncated BPTT, lengths, callbacks, non-finite steps, determinism),
save/load and PyTorch conversion."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import rnncore as rc
from rnncore._demo import adding_problem

from _numeric import central_diff


def _fd_check(f, arrays, grads, eps=1e-6, rtol=1e-5, atol=1e-8):
    for name, a in arrays.items():
        np.testing.assert_allclose(grads[name], central_diff(f, a, eps), rtol=rtol, atol=atol, err_msg=name)


def test_linear_matches_numpy_and_gradients():
    lin = rc.Linear(4, 3, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 4))
    np.testing.assert_allclose(lin(x), x @ lin.params["weight"].T + lin.params["bias"], rtol=1e-14)
    dy = np.random.default_rng(1).standard_normal((5, 2, 3))
    y, tape = lin.forward(x)
    dx = lin.backward(tape, dy)
    _fd_check(lambda: float(np.sum(lin(x) * dy)), dict(lin.params, x=x), dict(lin.grads, x=dx))


@pytest.mark.parametrize("readout", ["last", "all"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequential_gradients_by_finite_differences(readout, bidirectional):
    rng = np.random.default_rng(0)
    N, T, F = 3, 5, 2
    model = rc.Sequential(rc.GRU(F, 4, bidirectional=bidirectional, batch_first=False, dtype=np.float64, seed=1),
                          rc.LSTM(4 * (2 if bidirectional else 1), 3,
                                  bidirectional=bidirectional, batch_first=True, dtype=np.float64, seed=2),
                          rc.Linear(3 * (2 if bidirectional else 1), 2, dtype=np.float64, seed=3),
                          readout=readout)
    X = rng.uniform(-1, 1, (N, T, F))
    lengths = np.array([5, 3, 1])
    out, tapes, _ = model._run(X, lengths.astype(np.int32), None, train=True)
    dout = rng.standard_normal(out.shape)
    model.zero_grad()
    dX = model._backward(tapes, dout)

    def loss():
        o, _, _ = model._run(X, lengths.astype(np.int32), None, train=False)
        return float(np.sum(o * dout))

    _fd_check(loss, dict(model.params, X=X), dict(model.grads, X=dX))


def test_readout_last_picks_each_rows_last_step_and_reverse_final_state():
    layer = rc.GRU(2, 3, bidirectional=True, batch_first=True, dtype=np.float64, seed=0)
    model = rc.Sequential(layer)
    X = np.random.default_rng(0).standard_normal((3, 6, 2))
    lengths = np.array([6, 2, 4])
    out = model.predict(X, lengths=lengths)
    y, h = layer(X, lengths=lengths)
    np.testing.assert_array_equal(out[:, :3], h[0])      # forward direction: final state
    np.testing.assert_array_equal(out[:, 3:], h[1])      # reverse direction: its final state


def test_fit_learns_and_records_history():
    rng = np.random.default_rng(0)
    X, Y = adding_problem(600, 12, rng)
    model = rc.Sequential(rc.GRU(2, 16, seed=0), rc.Linear(16, 1, seed=0))
    before = model.evaluate(X, Y)
    hist = model.fit(X, Y, loss="mse", optimizer=rc.optim.Adam(lr=1e-2), epochs=4, batch_size=50,
                     seed=0, progress=False, validation_data=(X[:100], Y[:100]))
    assert hist.epochs == 4 and len(hist["loss"]) == 4 and len(hist["val_loss"]) == 4
    assert len(hist.grad_norm) == 4 * 12
    assert model.evaluate(X, Y) < 0.5 * before


def test_grad_norm_is_recorded_before_clipping_and_clip_applies():
    rng = np.random.default_rng(0)
    X, Y = adding_problem(20, 6, rng)
    Y = Y * 100  # large gradients
    model = rc.Sequential(rc.RNN(2, 5, dtype=np.float64, seed=0), rc.Linear(5, 1, dtype=np.float64, seed=0))
    before = {k: v.copy() for k, v in model.params.items()}
    # the unclipped gradient of this batch
    out, tapes, _ = model._run(X, None, None, train=True)
    _, dout = rc.losses.MSE()(out, Y)
    model.zero_grad()
    model._backward(tapes, dout)
    g = {k: v.copy() for k, v in model.grads.items()}
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
    assert norm > 1.0
    hist = model.fit(X, Y, optimizer=rc.optim.SGD(lr=1.0), epochs=1, batch_size=20, shuffle=False,
                     clip_norm=1.0, progress=False)
    assert hist.grad_norm[0] == pytest.approx(norm, rel=1e-10)
    delta = {k: before[k] - v for k, v in model.params.items()}
    for k in delta:
        np.testing.assert_allclose(delta[k], g[k] / norm, rtol=1e-9, atol=1e-12)
    # by value
    model2 = rc.Sequential(rc.RNN(2, 5, dtype=np.float64, seed=0), rc.Linear(5, 1, dtype=np.float64, seed=0))
    before2 = {k: v.copy() for k, v in model2.params.items()}
    model2.fit(X, Y, optimizer=rc.optim.SGD(lr=1.0), epochs=1, batch_size=20, shuffle=False,
               clip_value=0.01, progress=False)
    for k, v in model2.params.items():
        np.testing.assert_allclose(before2[k] - v, np.clip(g[k], -0.01, 0.01), rtol=1e-9, atol=1e-12)


def test_truncated_bptt_carries_state_and_cuts_gradient():
    rng = np.random.default_rng(1)
    N, T, k = 4, 12, 4
    X = rng.uniform(-1, 1, (N, T, 2))
    Y = rng.uniform(-1, 1, (N, T, 1))
    make = lambda: rc.Sequential(rc.LSTM(2, 3, batch_first=True, dtype=np.float64, seed=0),  # noqa: E731
                                 rc.Linear(3, 1, dtype=np.float64, seed=0), readout="all")
    model = make()
    model.fit(X, Y, optimizer=rc.optim.SGD(lr=0.1), epochs=1, batch_size=N, shuffle=False,
              bptt=k, progress=False)
    # the same by hand: per chunk, forward from the carried state (a constant),
    # backward within the chunk only, then one SGD step
    ref = make()
    lstm, lin = ref.layers
    state = None
    for s0 in range(0, T, k):
        xc, yc = X[:, s0:s0 + k], Y[:, s0:s0 + k]
        ref.zero_grad()
        y, st, tape = lstm.forward(xc, state)
        o, lt = lin.forward(y)
        _, do = rc.losses.MSE()(o, yc)
        lstm.backward(tape, lin.backward(lt, do))
        for name, p in ref.params.items():
            p -= 0.1 * ref.grads[name]
        state = st
    for name, p in model.params.items():
        np.testing.assert_allclose(p, ref.params[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_lengths_mask_the_loss_per_step():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (3, 5, 2))
    Y = rng.integers(0, 4, (3, 5))
    lengths = np.array([5, 2, 3])
    model = rc.Sequential(rc.GRU(2, 6, batch_first=True, seed=0), rc.Linear(6, 4, seed=0), readout="all")
    base = model.evaluate(X, Y, loss="cross_entropy", lengths=lengths)
    X2, Y2 = X.copy(), Y.copy()
    X2[1, 2:] = 99.0  # padding: changes nothing
    Y2[1, 2:] = 0
    assert model.evaluate(X2, Y2, loss="cross_entropy", lengths=lengths) == pytest.approx(base, rel=1e-6)


def test_nonfinite_step_raises_naming_batch_and_keeps_parameters():
    rng = np.random.default_rng(0)
    X, Y = adding_problem(40, 5, rng)
    Y[25, 0] = np.nan  # poisons the second batch of 20 (no shuffling)
    model = rc.Sequential(rc.LSTM(2, 4, seed=0), rc.Linear(4, 1, seed=0))
    opt = rc.optim.Adam(lr=1e-2)
    with pytest.raises(rc.NonFiniteError, match="epoch 1, batch 2") as e:
        model.fit(X, Y, optimizer=opt, epochs=1, batch_size=20, shuffle=False, progress=False)
    assert "before this step" in str(e.value)
    # the first batch was learnt, the second left no trace
    after_first = {k: v.copy() for k, v in model.params.items()}
    state = {k: np.array(v, copy=True) for k, v in opt.state_dict().items()}
    assert opt.iterations == 1
    ref = rc.Sequential(rc.LSTM(2, 4, seed=0), rc.Linear(4, 1, seed=0))
    ref.fit(X[:20], Y[:20], optimizer=rc.optim.Adam(lr=1e-2), epochs=1, batch_size=20, shuffle=False,
            progress=False)
    for k, v in ref.params.items():
        np.testing.assert_array_equal(after_first[k], v)
    hist = model.fit(X, Y, optimizer=opt, epochs=1, batch_size=20, shuffle=False, progress=False,
                     on_nonfinite="skip")
    assert hist.skipped == [(0, 1, 0)]
    assert opt.iterations == 2
    del state


def test_same_seed_and_threads_give_the_same_run_bit_for_bit():
    rng = np.random.default_rng(0)
    X, Y = adding_problem(200, 10, rng)

    def run():
        m = rc.Sequential(rc.LSTM(2, 8, num_layers=2, dropout=0.3, seed=5), rc.Dropout(0.2, seed=6),
                          rc.Linear(8, 1, seed=7))
        m.fit(X, Y, optimizer=rc.optim.Adam(lr=1e-2), epochs=2, batch_size=32, seed=11, progress=False)
        return m.params

    a, b = run(), run()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def _model():
    return rc.Sequential(rc.LSTM(2, 5, num_layers=2, bidirectional=True, seed=0, peephole=True),
                         rc.LeakyRNN(10, 4, batch_first=True, learn_alpha=True, seed=1),
                         rc.SkipRNN(4, 4, delays=(1, 3), seed=2),
                         rc.ClockworkRNN(4, 6, periods=(1, 2, 4), seed=3),
                         rc.GRU(6, 3, reset_after=False, seed=4),
                         rc.Dropout(0.1, seed=5), rc.Linear(3, 1, seed=6))


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = _model()
    for p in model.params.values():
        p += np.random.default_rng(1).standard_normal(p.shape).astype(p.dtype) * 1e-3
    path = tmp_path / "m.npz"
    model.save(path)
    back = rc.load(path)
    assert [type(l) for l in back.layers] == [type(l) for l in model.layers]
    for k, v in model.params.items():
        assert back.params[k].dtype == v.dtype
        np.testing.assert_array_equal(back.params[k], v)
    X = np.random.default_rng(2).standard_normal((4, 7, 2)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    # no pickle: the file opens with allow_pickle=False and holds no object arrays
    with np.load(path, allow_pickle=False) as z:
        assert all(z[n].dtype != object for n in z.files)


def _write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_corrupt_and_foreign_files_raise_clear_errors(tmp_path):
    model = _model()
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    cases = {}
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    cases["trunc.npz"] = "not a readable rnncore model file"
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    cases["flip.npz"] = "not a readable rnncore model file|not valid JSON|must be"
    _write_npz(tmp_path / "foreign.npz", {"a": np.zeros(3)})
    cases["foreign.npz"] = "no __config__"
    with np.load(good) as z:
        arrays = {n: z[n] for n in z.files}
    cfg = json.loads(str(arrays["__config__"]))
    bad = dict(cfg, layers=[dict(cfg["layers"][0], **{"class": "os.system"})] + cfg["layers"][1:])
    _write_npz(tmp_path / "unknown.npz", dict(arrays, __config__=np.array(json.dumps(bad))))
    cases["unknown.npz"] = "unknown layer class 'os.system'"
    extra = dict(arrays)
    extra["param:9.weight"] = np.zeros(2)
    _write_npz(tmp_path / "extra.npz", extra)
    cases["extra.npz"] = r"unexpected \['9.weight'\]"
    missing = {k: v for k, v in arrays.items() if k != "param:6.bias"}
    _write_npz(tmp_path / "missing.npz", missing)
    cases["missing.npz"] = r"missing \['6.bias'\]"
    shape = dict(arrays)
    shape["param:6.weight"] = np.zeros((2, 3), np.float32)
    _write_npz(tmp_path / "shape.npz", shape)
    cases["shape.npz"] = r"parameter 6.weight must be float32 \(1, 3\), got float32 \(2, 3\)"
    dtype = dict(arrays)
    dtype["param:6.weight"] = arrays["param:6.weight"].astype(np.float64)
    _write_npz(tmp_path / "dtype.npz", dtype)
    cases["dtype.npz"] = "must be float32"
    pickled = dict(arrays)
    pickled["param:6.weight"] = np.array([{"evil": 1}], dtype=object)
    with open(tmp_path / "pickle.npz", "wb") as f:
        np.savez(f, **pickled)
    cases["pickle.npz"] = "not a readable rnncore model file"
    _write_npz(tmp_path / "badjson.npz", dict(arrays, __config__=np.array("{not json")))
    cases["badjson.npz"] = "not valid JSON"
    badcfg = dict(cfg, layers=[dict(cfg["layers"][0], config={"input_size": -1})])
    _write_npz(tmp_path / "badcfg.npz", dict(arrays, __config__=np.array(json.dumps(badcfg))))
    cases["badcfg.npz"] = "bad config"
    for name, match in cases.items():
        with pytest.raises(ValueError, match=match):
            rc.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        rc.load(tmp_path / "nope.npz")


def test_save_is_atomic(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()
    for p in model.params.values():
        p += 1

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f != "m.npz"] == []  # no temp file left


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = adding_problem(120, 8, rng)

    def make():
        return rc.Sequential(rc.GRU(2, 6, dropout=0.0, seed=1), rc.Dropout(0.2, seed=2), rc.Linear(6, 1, seed=3))

    full = make()
    full.fit(X, Y, optimizer=rc.optim.Adam(lr=1e-2), epochs=4, batch_size=30, seed=9, progress=False)
    part = make()
    ck = rc.callbacks.ModelCheckpoint(tmp_path / "ck-{epoch}.npz")
    part.fit(X, Y, optimizer=rc.optim.Adam(lr=1e-2), epochs=2, batch_size=30, seed=9, progress=False,
             callbacks=[ck])
    model, opt, epoch = rc.load_checkpoint(tmp_path / "ck-2.npz")
    assert epoch == 2
    model.fit(X, Y, optimizer=opt, epochs=4, initial_epoch=epoch, batch_size=30, seed=9, progress=False)
    for k, v in full.params.items():
        np.testing.assert_array_equal(model.params[k], v)


def test_early_stopping_stops_and_restores_best():
    rng = np.random.default_rng(0)
    X, Y = adding_problem(100, 6, rng)
    model = rc.Sequential(rc.GRU(2, 4, seed=0), rc.Linear(4, 1, seed=0))
    es = rc.callbacks.EarlyStopping(monitor="val_loss", patience=1)
    hist = model.fit(X, Y, optimizer=rc.optim.Adam(lr=0.05), epochs=30, batch_size=10, seed=0,
                     progress=False, validation_data=(X, Y), callbacks=[es])
    assert hist.epochs < 30
    assert model.evaluate(X, Y) == pytest.approx(min(hist["val_loss"]), rel=1e-5)


def test_progress_bar_fallback_and_quiet(capsys):
    rng = np.random.default_rng(0)
    X, Y = adding_problem(40, 4, rng)
    model = rc.Sequential(rc.GRU(2, 4, seed=0), rc.Linear(4, 1, seed=0))
    model.fit(X, Y, epochs=1, batch_size=10, progress=False)
    assert capsys.readouterr().err == ""
    model.fit(X, Y, epochs=1, batch_size=10, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_fit_argument_errors():
    X, Y = adding_problem(10, 4, np.random.default_rng(0))
    model = rc.Sequential(rc.GRU(2, 4), rc.Linear(4, 1))
    with pytest.raises(ValueError, match=r"X must be 3-D \(N, T, F\), got 2-D"):
        model.fit(X[:, 0], Y, progress=False)
    with pytest.raises(ValueError, match="Y must have N = 10"):
        model.fit(X, Y[:5], progress=False)
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
        model.fit(X, Y, clip_norm=-1, progress=False)  # noqa
    with pytest.raises(ValueError, match="bptt must be >= 1, got 0"):
        model.fit(X, Y, bptt=0, progress=False)
    with pytest.raises(ValueError, match="readout must be 'last' or 'all'"):
        rc.Sequential(rc.GRU(2, 4), readout="first")
    with pytest.raises(ValueError, match="on_nonfinite must be"):
        model.fit(X, Y, on_nonfinite="ignore", progress=False)


def test_torch_conversion_round_trip():
    torch = pytest.importorskip("torch")
    for m in (torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True), torch.nn.GRU(3, 5, batch_first=True),
              torch.nn.RNN(3, 5, nonlinearity="relu")):
        layer = rc.from_torch(m)
        x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
        with torch.no_grad():
            yt = m(torch.from_numpy(x))[0].numpy()
        np.testing.assert_allclose(layer(x)[0], yt, rtol=1e-5, atol=1e-6)
        back = layer.to_torch()
        for k, p in back.named_parameters():
            np.testing.assert_array_equal(p.detach().numpy(), layer.params[k])
    with pytest.raises(ValueError, match="no peepholes"):
        rc.LSTM(2, 3, peephole=True).to_torch()
    with pytest.raises(TypeError, match="no torch.nn equivalent"):
        rc.LeakyRNN(2, 3).to_torch()
    with pytest.raises(TypeError, match="must be a torch.nn.LSTM, GRU or RNN"):
        rc.from_torch(torch.nn.Linear(2, 3))
