"""Checks of the numpy oracle (tests/_reference.py) before anything is compared to it.

Gradients against central finite differences for every cell and variant,
identities between cells, chunked == whole runs, the reverse direction against
a forward run on each row's flipped valid part, and (if installed) PyTorch for
the cells it has.
"""

import os
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

try:
    import _reference as ref
except ImportError:  # --import-mode=importlib does not put tests/ on sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _reference as ref
from _numeric import central_diff

# T = time steps, B = batch, I = input size, H = hidden size.
T, B, I, H = 5, 3, 3, 4
LENGTHS = np.array([5, 1, 3])  # unsorted, includes T and 1
EPS = 1e-6
FD_TOL = dict(rtol=1e-5, atol=1e-7)
EXACT = dict(rtol=1e-12, atol=1e-14)
CLOCK_STEP0 = 3  # nonzero, and not a multiple of any period

VARIANTS = [
    ("rnn_tanh", {}),
    ("rnn_relu", {}),
    ("leaky", {}),
    ("skip", {"delays": (1, 3)}),
    ("skip", {"delays": (2,)}),
    ("clockwork", {"periods": (1, 2, 4)}),
    ("lstm", {"peephole": False}),
    ("lstm", {"peephole": True}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
    ("indrnn", {"nonlinearity": "relu"}),
    ("indrnn", {"nonlinearity": "tanh"}),
]
VARIANT_IDS = [cell + "".join(f"-{k}={v}" for k, v in kw.items()).replace(" ", "")
               for cell, kw in VARIANTS]

LAYOUTS = {
    "uni": dict(num_layers=1, bidirectional=False, lengths=None, bias=True),
    "uni-lengths-nobias": dict(num_layers=1, bidirectional=False, lengths=LENGTHS, bias=False),
    "bidir": dict(num_layers=1, bidirectional=True, lengths=None, bias=True),
    "deep-bidir-lengths": dict(num_layers=2, bidirectional=True, lengths=LENGTHS, bias=True),
}


def _hidden(cell):
    # Clockwork needs H divisible into len(periods) = 3 groups.
    return 3 if cell == "clockwork" else H


def _arrays(state):
    """The float arrays of a state, in order (drops the clockwork step)."""
    if isinstance(state, tuple):
        return [a for a in state if isinstance(a, np.ndarray)]
    return [state]


def _relu_margin(cache):
    """Smallest |pre-activation| of a relu run on the rows still running (a
    finished row's step is discarded): must stay clear of the kink."""
    return min(np.abs(c["pre"][valid]).min(initial=np.inf)
               for per_dir in cache["layers"] for dcache in per_dir
               for c, valid in zip(dcache["steps"], dcache["valid"]))


_GIVEN = object()  # "use the problem's own initial state"


class Problem:
    """A random layer, input, state and loss weights (dy, dstate)."""

    def __init__(self, cell, kw, *, num_layers=1, bidirectional=False, lengths=None, bias=True,
                 seed=0, steps=T):
        self.cell, self.kw = cell, dict(kw)
        self.hidden = _hidden(cell)
        self.opts = dict(hidden_size=self.hidden, num_layers=num_layers,
                         bidirectional=bidirectional, **kw)
        self.lengths = lengths
        D = 2 if bidirectional else 1
        state_kw = dict(kw, step0=CLOCK_STEP0) if cell == "clockwork" else kw
        rng = np.random.default_rng(seed)
        self.params = ref.random_params(cell, I, self.hidden, num_layers, bidirectional, bias,
                                        rng=rng, **kw)
        self.x = rng.uniform(-1.0, 1.0, (steps, B, I))
        self.state = ref.initial_state(cell, self.hidden, B, num_layers, bidirectional,
                                       rng=rng, **state_kw)
        self.dy = rng.standard_normal((steps, B, D * self.hidden))
        self.dstate = ref.initial_state(cell, self.hidden, B, num_layers, bidirectional,
                                        rng=rng, **state_kw)

    def run(self, state=_GIVEN):
        state = self.state if state is _GIVEN else state
        return ref.forward(self.cell, self.params, self.x, state, self.lengths, **self.opts)

    def loss(self):
        y, final, _ = self.run()
        return np.sum(self.dy * y) + sum(np.sum(a * b) for a, b in
                                         zip(_arrays(final), _arrays(self.dstate)))


def _make_problem(cell, kw, **opts):
    """A Problem; for relu, the first seed whose pre-activations avoid the kink."""
    for seed in range(50):
        prob = Problem(cell, kw, seed=seed, **opts)
        relu = cell == "rnn_relu" or kw.get("nonlinearity") == "relu"
        if not relu or _relu_margin(prob.run()[2]) > 1e-3:
            return prob
    raise AssertionError("no seed keeps the relu pre-activations away from 0")


def _numeric_grad(f, a):
    """Central differences of the scalar f() w.r.t. the array a (perturbed in place)."""
    return central_diff(f, a, EPS)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("cell, kw", VARIANTS, ids=VARIANT_IDS)
def test_gradients_match_finite_differences(cell, kw, layout):
    prob = _make_problem(cell, kw, **LAYOUTS[layout])
    y, final, cache = prob.run()
    dx, dstate0, grads = ref.backward(cache, prob.dy, prob.dstate)

    assert list(grads) == list(prob.params)
    for name, value in prob.params.items():
        assert grads[name].shape == value.shape, name
        assert_allclose(grads[name], _numeric_grad(prob.loss, value), err_msg=name, **FD_TOL)
    assert_allclose(dx, _numeric_grad(prob.loss, prob.x), err_msg="dx", **FD_TOL)

    assert type(dstate0) is type(prob.state)
    if cell == "clockwork":
        assert dstate0[1] == CLOCK_STEP0
    for k, (d0, s0) in enumerate(zip(_arrays(dstate0), _arrays(prob.state))):
        assert d0.shape == s0.shape
        assert_allclose(d0, _numeric_grad(prob.loss, s0), err_msg=f"dstate0[{k}]", **FD_TOL)


def _zero_state(cell, kw, hidden):
    """An all-zero state for 2 bidirectional layers (clockwork step 0)."""
    state = ref.initial_state(cell, hidden, B, 2, True, **kw)
    for a in _arrays(state):
        a[...] = 0.0
    return state


@pytest.mark.parametrize("cell, kw", VARIANTS, ids=VARIANT_IDS)
def test_state_none_is_zero_state_and_dstate_none_is_zero(cell, kw):
    prob = _make_problem(cell, kw, num_layers=2, bidirectional=True, lengths=LENGTHS)
    zero = _zero_state(cell, kw, prob.hidden)
    y_none, final_none, cache_none = prob.run(state=None)
    y_zero, final_zero, cache_zero = prob.run(state=zero)
    assert_array_equal(y_none, y_zero)
    for a, b in zip(_arrays(final_none), _arrays(final_zero)):
        assert_array_equal(a, b)
    if cell == "clockwork":
        assert final_none[1] == T

    # dstate=None: gradient of sum(dy * y) alone; d(zero state) still exists.
    dx_none, d0_none, g_none = ref.backward(cache_none, prob.dy, None)
    zero_dstate = _zero_state(cell, kw, prob.hidden)
    dx_zero, d0_zero, g_zero = ref.backward(cache_zero, prob.dy, zero_dstate)
    assert_array_equal(dx_none, dx_zero)
    assert len(_arrays(d0_none)) == len(_arrays(zero))
    for a, b in zip(_arrays(d0_none), _arrays(d0_zero)):
        assert_array_equal(a, b)
    assert np.any(_arrays(d0_none)[0])
    for name in g_none:
        assert_array_equal(g_none[name], g_zero[name], err_msg=name)


@pytest.mark.parametrize("cell, kw", VARIANTS, ids=VARIANT_IDS)
def test_outputs_are_zero_past_lengths(cell, kw):
    prob = _make_problem(cell, kw, num_layers=2, bidirectional=True, lengths=LENGTHS)
    y, _, _ = prob.run()
    past = np.arange(T)[:, None] >= LENGTHS[None, :]  # (T, B)
    assert_array_equal(y[past], 0.0)
    assert np.all(np.any(y[~past] != 0.0, axis=-1))
    # Padding is never read: changing x there changes nothing.
    x = prob.x.copy()
    prob.x[past] = 123.0
    y_padded, _, _ = prob.run()
    prob.x = x
    assert_array_equal(y_padded, y)


@pytest.mark.parametrize("cell, kw", VARIANTS, ids=VARIANT_IDS)
def test_reverse_is_forward_on_flipped_valid_part(cell, kw):
    # Reverse direction of row b == forward direction run on x[len_b-1::-1, b]
    # with the reverse weights, its output flipped back.
    prob = _make_problem(cell, kw, bidirectional=True, lengths=LENGTHS)
    hid = prob.hidden
    y, final, _ = prob.run()
    rev_params = {name[:-len("_reverse")]: v for name, v in prob.params.items()
                  if name.endswith("_reverse")}
    opts = dict(prob.opts, bidirectional=False)
    for b, n in enumerate(LENGTHS):
        x_b = prob.x[n - 1::-1, b:b + 1]
        state_b = [a[1:2, ..., b:b + 1, :] for a in _arrays(prob.state)]
        if cell == "lstm":
            state_b = tuple(state_b)
        elif cell == "clockwork":
            state_b = (state_b[0], CLOCK_STEP0)
        else:
            state_b = state_b[0]
        y_b, final_b, _ = ref.forward(cell, rev_params, x_b, state_b, **opts)
        assert_allclose(y[:n, b, hid:], y_b[::-1, 0], **EXACT)
        for a, a_b in zip(_arrays(final), _arrays(final_b)):
            assert_allclose(a[1, ..., b, :], a_b[0, ..., 0, :], **EXACT)


@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cell, kw", VARIANTS, ids=VARIANT_IDS)
def test_chunks_equal_whole(cell, kw, use_lengths):
    # Split after 2 steps; with lengths every row is still running at the split.
    split = 2
    lengths = np.array([5, 3, 4]) if use_lengths else None
    prob = _make_problem(cell, kw, num_layers=2, lengths=lengths)
    y, final, cache = prob.run()
    dx, dstate0, grads = ref.backward(cache, prob.dy, prob.dstate)

    opts = prob.opts
    len1 = None if lengths is None else np.minimum(lengths, split)
    len2 = None if lengths is None else lengths - split
    y1, mid, c1 = ref.forward(cell, prob.params, prob.x[:split], prob.state, len1, **opts)
    y2, final2, c2 = ref.forward(cell, prob.params, prob.x[split:], mid, len2, **opts)
    assert_allclose(np.concatenate([y1, y2]), y, **EXACT)
    for a, b in zip(_arrays(final2), _arrays(final)):
        assert_allclose(a, b, **EXACT)
    if cell == "clockwork":
        assert mid[1] == CLOCK_STEP0 + split
        assert final2[1] == final[1] == CLOCK_STEP0 + T

    # Truncated BPTT with the state gradient carried over is the full BPTT.
    dx2, dmid, g2 = ref.backward(c2, prob.dy[split:], prob.dstate)
    dx1, d0, g1 = ref.backward(c1, prob.dy[:split], dmid)
    assert_allclose(np.concatenate([dx1, dx2]), dx, **EXACT)
    for a, b in zip(_arrays(d0), _arrays(dstate0)):
        assert_allclose(a, b, **EXACT)
    for name in grads:
        assert_allclose(g1[name] + g2[name], grads[name], err_msg=name, **EXACT)


def _full_run(cell, params, x, state, dy, dstate, **opts):
    """Forward and backward with LENGTHS: y, final arrays, dx, dstate0 arrays, grads."""
    y, final, cache = ref.forward(cell, params, x, state, LENGTHS, **opts)
    dx, d0, grads = ref.backward(cache, dy, dstate)
    return y, _arrays(final), dx, _arrays(d0), grads


def _assert_same_run(run, expected, rename=lambda name: name):
    """Compare two ``_full_run`` results; rename maps expected's param names to run's."""
    y, final, dx, d0, grads = run
    y_e, final_e, dx_e, d0_e, grads_e = expected
    assert_allclose(y, y_e, **EXACT)
    assert_allclose(dx, dx_e, **EXACT)
    assert len(final) == len(final_e) and len(d0) == len(d0_e)
    for a, b in zip(final + d0, final_e + d0_e):
        assert_allclose(a, b, **EXACT)
    for name, g in grads_e.items():
        assert_allclose(grads[rename(name)], g, err_msg=name, **EXACT)


@pytest.fixture
def tanh_problem():
    return _make_problem("rnn_tanh", {}, num_layers=2, bidirectional=True, lengths=LENGTHS)


OPTS_L2_BI = dict(hidden_size=H, num_layers=2, bidirectional=True)


def test_leaky_with_alpha_zero_is_tanh_rnn(tanh_problem):
    p = tanh_problem
    params = dict(p.params)
    alphas = [name for name in ref.param_shapes("leaky", I, H, 2, True)
              if name.startswith("alpha")]
    for name in alphas:
        params[name] = np.zeros(H)
    expected = _full_run("rnn_tanh", p.params, p.x, p.state, p.dy, p.dstate, **OPTS_L2_BI)
    run = _full_run("leaky", params, p.x, p.state, p.dy, p.dstate, **OPTS_L2_BI)
    _assert_same_run(run, expected)
    assert set(run[4]) - set(expected[4]) == set(alphas) and len(alphas) == 4


def test_skip_with_delay_one_is_tanh_rnn(tanh_problem):
    p = tanh_problem

    def rename(name):
        return name.replace("weight_hh_l", "weight_hh_d1_l")

    params = {rename(name): v for name, v in p.params.items()}
    expected = _full_run("rnn_tanh", p.params, p.x, p.state, p.dy, p.dstate, **OPTS_L2_BI)
    # The skip state is the one-vector history (L*D, 1, B, H).
    y, final, dx, d0, grads = _full_run("skip", params, p.x, p.state[:, None], p.dy,
                                        p.dstate[:, None], delays=(1,), **OPTS_L2_BI)
    assert final[0].shape == d0[0].shape == (4, 1, B, H)
    _assert_same_run((y, [final[0][:, 0]], dx, [d0[0][:, 0]], grads), expected, rename)


def test_clockwork_with_period_one_is_tanh_rnn(tanh_problem):
    p = tanh_problem
    expected = _full_run("rnn_tanh", p.params, p.x, p.state, p.dy, p.dstate, **OPTS_L2_BI)
    y, final, cache = ref.forward("clockwork", p.params, p.x, (p.state, 7), LENGTHS,
                                  periods=(1,), **OPTS_L2_BI)
    dx, d0, grads = ref.backward(cache, p.dy, (p.dstate, 7))
    assert final[1] == 7 + T and d0[1] == 7
    _assert_same_run((y, [final[0]], dx, [d0[0]], grads), expected)


def test_clockwork_schedule_and_disallowed_blocks():
    # periods (1, 2, 4), one unit per group: from step 3 the updates are
    # t=3: g0; t=4: g0, g1, g2; t=5: g0.
    prob = _make_problem("clockwork", {"periods": (1, 2, 4)}, steps=3)
    h0 = prob.state[0]
    y, (h, step), _ = prob.run()
    assert step == CLOCK_STEP0 + 3
    assert_array_equal(y[0, :, 1:], h0[0, :, 1:])
    assert np.all(y[0, :, 0] != h0[0, :, 0])
    assert np.all(y[1] != y[0])
    assert_array_equal(y[2, :, 1:], y[1, :, 1:])

    w = prob.params["weight_hh_l0"]
    assert_array_equal(w[np.tril_indices(3, -1)], 0.0)  # random_params zeroes them
    w[2, 0] = 5.0  # a disallowed block is ignored
    y2, _, cache = prob.run()
    assert_array_equal(y2, y)
    _, _, grads = ref.backward(cache, prob.dy, prob.dstate)
    assert_array_equal(grads["weight_hh_l0"][np.tril_indices(3, -1)], 0.0)


def test_skip_final_state_draws_on_initial_history():
    # Row 1 runs 1 step: its history is the initial one shifted by one, plus h_0.
    prob = _make_problem("skip", {"delays": (1, 3)}, lengths=LENGTHS)
    y, final, _ = prob.run()
    assert final.shape == (1, 3, B, H)
    assert_array_equal(final[0, :2, 1], prob.state[0, 1:, 1])
    assert_array_equal(final[0, 2, 1], y[0, 1])
    # Row 2 runs 3 steps: its history is exactly its outputs.
    assert_array_equal(final[0, :, 2], y[:3, 2])


def test_param_shapes():
    shapes = ref.param_shapes("lstm", 3, 4, num_layers=2, bidirectional=True, peephole=True)
    assert shapes["weight_ih_l0"] == (16, 3)
    assert shapes["weight_ih_l1_reverse"] == (16, 8)
    assert shapes["weight_hh_l1"] == (16, 4)
    assert shapes["bias_hh_l0_reverse"] == (16,)
    assert shapes["weight_ch_l1_reverse"] == (3, 4)
    assert len(shapes) == 4 * 5

    skip = ref.param_shapes("skip", 3, 4, delays=(1, 3), bias=False)
    assert skip == {"weight_ih_l0": (4, 3), "weight_hh_d1_l0": (4, 4), "weight_hh_d3_l0": (4, 4)}
    leaky = ref.param_shapes("leaky", 3, 4, bidirectional=True)
    assert leaky["alpha_l0_reverse"] == (4,)
    assert ref.param_shapes("gru", 3, 4)["weight_hh_l0"] == (12, 4)

    with pytest.raises(TypeError):
        ref.param_shapes("skip", 3, 4)
    with pytest.raises(ValueError):
        ref.param_shapes("clockwork", 3, 4, periods=(1, 2, 4))
    with pytest.raises(ValueError):
        ref.param_shapes("elman", 3, 4)


def test_random_params_ranges():
    params = ref.random_params("leaky", I, 64, rng=1)
    assert np.all((params["alpha_l0"] >= 0.1) & (params["alpha_l0"] <= 0.9))
    assert np.abs(params["weight_hh_l0"]).max() <= 0.5
    assert all(v.dtype == np.float64 for v in params.values())


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_matches_torch(cell):
    # PyTorch's conventions (gate order, reset_after GRU, packed sequences).
    torch = pytest.importorskip("torch")
    prob = _make_problem(cell, {}, num_layers=2, bidirectional=True, lengths=LENGTHS)
    y, final, cache = prob.run()
    dx, dstate0, grads = ref.backward(cache, prob.dy, prob.dstate)

    opts = dict(num_layers=2, bidirectional=True)
    if cell == "lstm":
        module = torch.nn.LSTM(I, H, **opts)
    elif cell == "gru":
        module = torch.nn.GRU(I, H, **opts)
    else:
        module = torch.nn.RNN(I, H, nonlinearity=cell[4:], **opts)
    module = module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(prob.params[name]))
    x = torch.from_numpy(prob.x.copy()).requires_grad_(True)
    states = [torch.from_numpy(a.copy()).requires_grad_(True) for a in _arrays(prob.state)]
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(LENGTHS),
                                                     enforce_sorted=False)
    out, hn = module(packed, tuple(states) if cell == "lstm" else states[0])
    y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    hn = hn if cell == "lstm" else (hn,)
    loss = (y_t * torch.from_numpy(prob.dy)).sum()
    for h, dh in zip(hn, _arrays(prob.dstate)):
        loss = loss + (h * torch.from_numpy(dh)).sum()
    loss.backward()

    tol = dict(rtol=1e-10, atol=1e-12)
    assert_allclose(y, y_t.detach().numpy(), **tol)
    for a, h in zip(_arrays(final), hn):
        assert_allclose(a, h.detach().numpy(), **tol)
    assert_allclose(dx, x.grad.numpy(), **tol)
    for a, s in zip(_arrays(dstate0), states):
        assert_allclose(a, s.grad.numpy(), **tol)
    for name, p in module.named_parameters():
        assert_allclose(grads[name], p.grad.numpy(), err_msg=name, **tol)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_indrnn_recurs_on_each_unit_alone(nonlinearity):
    """Two steps of IndRNN written out: h_t = phi(W_ih x_t + b_ih + w_hh * h_{t-1} + b_hh),
    with w_hh a vector, so unit j's next state sees only its own h_{t-1, j}."""
    prob = _make_problem("indrnn", {"nonlinearity": nonlinearity})
    p = {k[:-3]: v for k, v in prob.params.items()}  # weight_ih_l0 -> weight_ih
    assert p["weight_hh"].shape == (H,)
    phi = (lambda a: np.maximum(a, 0.0)) if nonlinearity == "relu" else np.tanh
    h = prob.state[0]
    for t in range(2):
        h = phi(prob.x[t] @ p["weight_ih"].T + p["bias_ih"] + p["weight_hh"] * h + p["bias_hh"])
        y, _, _ = prob.run()
        assert_allclose(y[t], h, **EXACT)
