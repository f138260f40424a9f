"""rnncore's C++ kernels against the numpy reference: outputs, final states
and every gradient; float64 finite differences through the C++ path; chunked
runs; every ISA and thread count."""
from __future__ import annotations

import numpy as np
import pytest

import rnncore as rc

from _helpers import (CELL_IDS, assert_close, cast_state, central_diff, fix_h, flat, isa,
                      make_pair, random_lengths, ref_forward, ref_state, threads)
import _reference as ref

SIZES = [(1, 1, 1, 1), (5, 3, 4, 5), (7, 2, 3, 17), (4, 5, 6, 64)]  # T, B, I, H
CONFIGS = [  # num_layers, bidirectional, with lengths, with initial state
    (1, False, False, False),
    (1, True, True, True),
    (2, True, True, False),
    (2, False, False, True),
]


def like_state(state, rng):
    """Random arrays in the structure of ``state`` (ints, clockwork's step, kept)."""
    if isinstance(state, tuple):
        return tuple(rng.standard_normal(a.shape) if isinstance(a, np.ndarray) else a for a in state)
    return rng.standard_normal(state.shape)


def _run_both(cell_id, T, B, I, H, L, bidir, use_len, use_state, dtype, seed=0, batch_first=False,
              weight_scale=1.0):
    H = fix_h(cell_id, H)
    rng = np.random.default_rng(seed)
    layer, params = make_pair(cell_id, I, H, num_layers=L, bidirectional=bidir, dtype=dtype,
                              batch_first=batch_first, seed=seed)
    if weight_scale != 1.0:  # a contractive recurrence: float32 rounding is not amplified
        for k in params:
            if k.startswith("weight"):
                params[k] = params[k] * weight_scale
                layer.params[k][...] = params[k]
    x = rng.uniform(-1, 1, (T, B, I))
    lengths = random_lengths(T, B, rng) if use_len else None
    state = ref_state(cell_id, H, B, L, bidir, seed=seed + 1) if use_state else None
    y_ref, st_ref, cache = ref_forward(cell_id, params, x, state, lengths, H, L, bidir)
    dy = rng.standard_normal(y_ref.shape)
    dstate = like_state(st_ref, rng)
    dx_ref, dst0_ref, g_ref = ref.backward(cache, dy, dstate)

    xin = x.transpose(1, 0, 2) if batch_first else x
    y, st, tape = layer.forward(xin.astype(dtype), cast_state(state, dtype), lengths)
    y_inf, st_inf = layer(xin.astype(dtype), cast_state(state, dtype), lengths)
    dyin = dy.transpose(1, 0, 2) if batch_first else dy
    dx, dst0 = layer.backward(tape, dyin.astype(dtype), cast_state(dstate, dtype))
    if batch_first:
        y, y_inf, dx = (a.transpose(1, 0, 2) for a in (y, y_inf, dx))
    return dict(y=(y, y_ref), y_inf=(y_inf, y_ref), dx=(dx, dx_ref),
                state=(flat(st), flat(st_ref)), state_inf=(flat(st_inf), flat(st_ref)),
                dstate0=(flat(dst0), flat(dst0_ref)),
                grads=({k: layer.grads[k] for k in g_ref}, g_ref))


def _check(res, dtype):
    for key in ("y", "y_inf", "dx"):
        a, d = res[key]
        assert a.dtype == np.dtype(dtype)
        assert_close(a, d, dtype, key)
    for key in ("state", "state_inf", "dstate0"):
        for i, (a, d) in enumerate(zip(*res[key])):
            assert_close(a, d, dtype, f"{key}[{i}]")
    got, want = res["grads"]
    for k in want:
        assert_close(got[k], want[k], dtype, f"grad {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", CONFIGS, ids=["L1", "L1-bi-len-state", "L2-bi-len", "L2-state"])
@pytest.mark.parametrize("size", SIZES, ids=[f"T{t}B{b}I{i}H{h}" for t, b, i, h in SIZES])
@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_matches_reference(cell_id, size, config, dtype):
    T, B, I, H = size
    L, bidir, use_len, use_state = config
    _check(_run_both(cell_id, T, B, I, H, L, bidir, use_len, use_state, dtype), dtype)


@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_batch_first_matches_reference(cell_id):
    _check(_run_both(cell_id, 6, 4, 3, 9, 2, True, True, True, np.float64, batch_first=True), np.float64)


@pytest.mark.parametrize("name", rc.available_isas())
@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_every_isa_matches_reference(cell_id, name):
    with isa(name):
        for dtype in (np.float32, np.float64):
            _check(_run_both(cell_id, 6, 5, 4, 19, 2, True, True, True, dtype, seed=3), dtype)


# From 8 batch rows, while the weights stay in cache, the steps of these cells
# make x_t W_ih^T themselves (no projection pass before the loop): rows
# past their length, both directions, two layers and batch_first there too.
FUSED_IDS = [c for c in CELL_IDS if not c.startswith(("gru", "clockwork"))]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("name", rc.available_isas())
@pytest.mark.parametrize("cell_id", FUSED_IDS)
def test_steps_making_the_input_projection_match_reference(cell_id, name, n_threads):
    with isa(name), threads(n_threads):
        for dtype in (np.float32, np.float64):
            _check(_run_both(cell_id, 7, 9, 5, 21, 2, True, True, True, dtype, seed=4), dtype)
        _check(_run_both(cell_id, 6, 12, 4, 19, 1, True, True, False, np.float64, seed=6,
                         batch_first=True), np.float64)


@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_one_and_two_threads_agree(cell_id):
    # H = 41 gives blocks split unevenly between two threads, with a partial block
    out = {}
    for n in (1, 2):
        with threads(n):
            out[n] = _run_both(cell_id, 9, 6, 5, 41, 2, True, True, True, np.float32, seed=5)
    _check(out[2], np.float32)
    # BLAS may sum in another order with two threads: float32 tolerances
    for key in ("y", "dx"):
        assert_close(out[1][key][0], out[2][key][0], np.float32, key)
    for k, g1 in out[1]["grads"][0].items():
        assert_close(g1, out[2]["grads"][0][k], np.float32, k)


@pytest.mark.parametrize("name", rc.available_isas())
def test_clockwork_team_sharing_every_group_matches_reference(name):
    """H = 246 in three groups of 82 units: at least two unit blocks a thread
    in every group on every ISA, so a team of two shares out each group's
    blocks (the steps' work equal at every step) instead of splitting by
    average cost; with 82 units a group, blocks straddle two groups."""
    out = {}
    with isa(name):
        for n in (1, 2):
            with threads(n):
                out[n] = _run_both("clockwork", 12, 6, 5, 246, 1, True, True, True, np.float64, seed=21)
                _check(out[n], np.float64)
                _check(_run_both("clockwork", 9, 3, 7, 246, 2, False, True, False, np.float32, seed=22,
                                 weight_scale=0.3), np.float32)
    for key in ("y", "dx"):
        assert_close(out[1][key][0], out[2][key][0], np.float64, key)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("cell_id", ["lstm", "gru", "gru_v1", "skip_1_3", "clockwork"])
def test_large_products_match_reference(cell_id, n_threads):
    """Sizes where the weight-gradient and dx products run on rnncore's own
    tiles over several K chunks, row panels and a team of two (about 10^7
    multiply-adds each), and the input projection over several row panels
    and K chunks."""
    with threads(n_threads):
        _check(_run_both(cell_id, 25, 96, 64, 72, 1, False, True, True, np.float32, seed=8,
                         weight_scale=0.3), np.float32)
        _check(_run_both(cell_id, 9, 40, 200, 52, 1, False, False, False, np.float64, seed=9), np.float64)
        # the input projection over several K chunks (of 256 KB of packed weights)
        _check(_run_both(cell_id, 3, 5, 4200, 20, 1, False, True, True, np.float64, seed=10,
                         weight_scale=0.05), np.float64)


@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_inference_is_the_same_bits_for_any_team(cell_id):
    """The forward kernels split unit blocks (and one-gate cells' block pairs)
    between threads without changing any sum: 1, 2 and 3 threads give the
    same bits, with lengths, both directions and a partial block."""
    layer, _ = make_pair(cell_id, 7, fix_h(cell_id, 83), num_layers=2, bidirectional=True,
                         dtype=np.float32, seed=2)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((11, 9, 7)).astype(np.float32)
    lengths = rng.integers(1, 12, 9)
    out = {}
    for n in (1, 2, 3):
        with threads(n):
            out[n] = layer(x, lengths=lengths)[0]
    np.testing.assert_array_equal(out[1], out[2])
    np.testing.assert_array_equal(out[1], out[3])


@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_chunks_equal_whole_sequence(cell_id):
    rng = np.random.default_rng(7)
    layer, _ = make_pair(cell_id, 3, fix_h(cell_id, 11), num_layers=2, dtype=np.float64)
    x = rng.uniform(-1, 1, (12, 4, 3))
    y_all, st_all = layer(x)
    y1, st1 = layer(x[:5])
    y2, st2 = layer(x[5:], st1)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y_all, rtol=1e-12, atol=1e-13)
    for a, b in zip(flat(st2), flat(st_all)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def _loss(layer, x, state, lengths, dy, dstate):
    y, st = layer(x, state, lengths)
    return float(np.sum(y * dy) + sum(np.sum(a * b) for a, b in zip(flat(st), flat(dstate))))


@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_finite_differences_through_cpp(cell_id):
    """Central differences of every parameter, input and initial-state entry (float64)."""
    rng = np.random.default_rng(11)
    T, B, I, H, L = 5, 3, 2, 3, 2
    layer, _ = make_pair(cell_id, I, H, num_layers=L, bidirectional=True, dtype=np.float64, seed=11)
    x = rng.uniform(-1, 1, (T, B, I))
    lengths = np.array([4, 2, 3])
    state = ref_state(cell_id, H, B, L, True, seed=12)
    y, st, tape = layer.forward(x, state, lengths)
    dy = rng.standard_normal(y.shape)
    dstate = like_state(st, rng)
    layer.zero_grad()
    dx, dst0 = layer.backward(tape, dy, dstate)

    def fd(arr, get_loss):
        return central_diff(get_loss, arr)

    f = lambda: _loss(layer, x, state, lengths, dy, dstate)  # noqa: E731
    for name, p in layer.params.items():
        np.testing.assert_allclose(layer.grads[name], fd(p, f), rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(dx, fd(x, f), rtol=1e-5, atol=1e-7, err_msg="x")
    for i, (s, ds) in enumerate(zip(flat(state), flat(dst0))):
        np.testing.assert_allclose(ds, fd(s, f), rtol=1e-5, atol=1e-7, err_msg=f"state[{i}]")


@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_grads_accumulate_and_zero(cell_id):
    layer, _ = make_pair(cell_id, 3, fix_h(cell_id, 5), dtype=np.float64)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 2, 3))
    y, _, tape = layer.forward(x)
    layer.backward(tape, np.ones_like(y))
    once = {k: v.copy() for k, v in layer.grads.items()}
    assert any(np.any(v != 0) for v in once.values())
    layer.backward(tape, np.ones_like(y))  # the same tape twice: gradients add
    for k, v in layer.grads.items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-12, err_msg=k)
    layer.zero_grad()
    assert all(np.all(v == 0) for v in layer.grads.values())


def test_dropout_between_layers_in_training_only():
    layer = rc.LSTM(3, 8, num_layers=3, dropout=0.5, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2, 3))
    y_a, _ = layer(x)
    y_b, _ = layer(x)
    np.testing.assert_array_equal(y_a, y_b)  # inference: no dropout
    y_t, _, tape = layer.forward(x)
    assert not np.allclose(y_t, y_a)          # training: masks applied between layers
    assert len(tape.masks) == 3 and tape.masks[-1] is None
    assert all(set(np.unique(m)) <= {0.0, 2.0} for m in tape.masks[:2])
    # the gradient goes through the same masks: check one weight by differences
    dy = np.random.default_rng(1).standard_normal(y_t.shape)
    layer.zero_grad()
    layer.backward(tape, dy)
    masks = tape.masks

    def loss_with_masks():
        inp = x
        for k in range(3):
            sub = rc.LSTM(3 if k == 0 else 8, 8, dtype=np.float64)
            for role in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                sub.params[f"{role}_l0"] = layer.params[f"{role}_l{k}"]
            inp, _ = sub(inp)
            if masks[k] is not None:
                inp = inp * masks[k]
        return float(np.sum(inp * dy))

    w = layer.params["weight_hh_l0"]
    eps, idx = 1e-6, (3, 2)
    old = w[idx]
    w[idx] = old + eps
    lp = loss_with_masks()
    w[idx] = old - eps
    lm = loss_with_masks()
    w[idx] = old
    assert abs(layer.grads["weight_hh_l0"][idx] - (lp - lm) / (2 * eps)) < 1e-6


def test_nan_propagates_per_row():
    layer = rc.GRU(2, 6, seed=0)
    x = np.zeros((5, 3, 2), np.float32)
    x[2, 1, 0] = np.nan
    y, h = layer(x)
    assert np.all(np.isfinite(y[:, [0, 2]])) and np.all(np.isfinite(y[:2, 1]))
    assert np.all(np.isnan(y[2:, 1]))


@pytest.mark.parametrize("cell_id", ["lstm", "gru"])
def test_inference_from_many_threads_equals_serial(cell_id):
    from concurrent.futures import ThreadPoolExecutor
    layer, _ = make_pair(cell_id, 8, 24, num_layers=2, bidirectional=True, dtype=np.float32)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((20, 4, 8)).astype(np.float32) for _ in range(16)]
    serial = [layer(x)[0] for x in xs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            got = list(pool.map(lambda x: layer(x)[0], xs))
            for a, b in zip(got, serial):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell_id", ["lstm", "gru_v1", "gru", "skip_1_3", "clockwork"])
def test_backward_without_input_grad_skips_dx_only(cell_id):
    """input_grad=False (what a model's first layer uses) returns no dx and
    leaves every parameter gradient and dstate0 bit for bit as with dx."""
    H = fix_h(cell_id, 12)
    rng = np.random.default_rng(31)
    x = rng.uniform(-1, 1, (7, 4, 5))
    dy = rng.standard_normal((7, 4, 2 * H))
    runs = {}
    for flag in (True, False):
        layer, _ = make_pair(cell_id, 5, H, num_layers=2, bidirectional=True, seed=31)
        _, _, tape = layer.forward(x)
        dx, dst0 = layer.backward(tape, dy, input_grad=flag)
        runs[flag] = (dx, flat(dst0), {k: v.copy() for k, v in layer.grads.items()})
    assert runs[False][0] is None and runs[True][0].shape == x.shape
    for a, b in zip(runs[True][1], runs[False][1]):
        np.testing.assert_array_equal(a, b)
    for k, g in runs[True][2].items():
        np.testing.assert_array_equal(g, runs[False][2][k], err_msg=k)
    with pytest.raises(TypeError, match="input_grad must be a bool, got int 1"):
        layer.backward(tape, dy, input_grad=1)
