"""Shared test helpers: build an rnncore layer and the reference's twin."""
from __future__ import annotations

import contextlib

import numpy as np

import rnncore as rc
from rnncore import _core
from rnncore.runtime import _select_isa

import _reference as ref
from _numeric import central_diff, deep_copy, get_path, replace_path  # noqa: F401 (shared here)

# (test id, reference cell name, reference kwargs, rnncore class, rnncore kwargs)
GATED = [
    ("lstm", "lstm", {}, "LSTM", {}),
    ("lstm_peephole", "lstm", {"peephole": True}, "LSTM", {"peephole": True}),
    ("gru", "gru", {"reset_after": True}, "GRU", {}),
    ("gru_v1", "gru", {"reset_after": False}, "GRU", {"reset_after": False}),
    ("rnn_tanh", "rnn_tanh", {}, "RNN", {"nonlinearity": "tanh"}),
    ("rnn_relu", "rnn_relu", {}, "RNN", {"nonlinearity": "relu"}),
    ("leaky", "leaky", {}, "LeakyRNN", {"alpha": 0.5}),
    ("skip_1_3", "skip", {"delays": (1, 3)}, "SkipRNN", {"delays": (1, 3)}),
    ("skip_2", "skip", {"delays": (2,)}, "SkipRNN", {"delays": (2,)}),
    ("clockwork", "clockwork", {"periods": (1, 2, 4)}, "ClockworkRNN", {"periods": (1, 2, 4)}),
    ("indrnn_relu", "indrnn", {"nonlinearity": "relu"}, "IndRNN", {"nonlinearity": "relu"}),
    ("indrnn_tanh", "indrnn", {"nonlinearity": "tanh"}, "IndRNN", {"nonlinearity": "tanh"}),
]
CELL_IDS = [c[0] for c in GATED]
CELLS = {c[0]: c for c in GATED}
# the cells torch.nn has (LSTM without peepholes, GRU as reset_after, RNN)
TORCH_CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def binding_arg_names(fn):
    """The parameter names of a pybind11 function, in order, from its signature
    line (layers.py passes the bindings' arguments in order; the tests that
    replay its calls name them)."""
    first = fn.__doc__.splitlines()[0]
    inside = first[first.index("(") + 1:first.rindex(")")]
    return [part.split(":")[0].strip() for part in inside.split(", ") if ":" in part]


def random_lengths(T, B, rng):
    """(B,) int64 lengths in [1, T], the first row T long."""
    lens = rng.integers(1, T + 1, size=B)
    lens[0] = T
    return lens


def fix_h(cell_id, H):
    """H rounded up so that clockwork's three groups are equal."""
    return -(-H // 3) * 3 if cell_id == "clockwork" else H


def make_pair(cell_id, I, H, *, num_layers=1, bidirectional=False, dtype=np.float64,
              batch_first=False, bias=True, seed=0):
    """An rnncore layer and reference params (float64) holding the same weights."""
    _, rname, rkw, cls, kw = CELLS[cell_id]
    layer = getattr(rc, cls)(I, H, num_layers=num_layers, bidirectional=bidirectional,
                             dtype=dtype, batch_first=batch_first, bias=bias, **kw)
    params = ref.random_params(rname, I, H, num_layers=num_layers, bidirectional=bidirectional,
                               bias=bias, rng=seed, **rkw)
    assert set(params) == set(layer.params)
    for k, v in params.items():
        layer.params[k][...] = v
    return layer, params


def ref_forward(cell_id, params, x, state, lengths, H, num_layers, bidirectional):
    _, rname, rkw, _, _ = CELLS[cell_id]
    return ref.forward(rname, params, x, state, lengths, hidden_size=H, num_layers=num_layers,
                       bidirectional=bidirectional, **rkw)


def ref_state(cell_id, H, B, num_layers, bidirectional, seed=1):
    _, rname, rkw, _, _ = CELLS[cell_id]
    kw = dict(rkw, step0=3) if rname == "clockwork" else rkw  # start out of phase
    return ref.initial_state(rname, H, B, num_layers=num_layers, bidirectional=bidirectional,
                             rng=seed, **kw)


def cast_state(state, dtype):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.astype(dtype) if isinstance(s, np.ndarray) else s for s in state)
    return state.astype(dtype)


def flat(state):
    """The arrays of a state (tuple or array), as a list."""
    if isinstance(state, tuple):
        return [s for s in state if isinstance(s, np.ndarray)]
    return [state]


def tolerances(dtype):
    return (2e-4, 2e-5) if np.dtype(dtype) == np.float32 else (1e-9, 1e-11)


def assert_close(actual, desired, dtype, what):
    rtol, atol = tolerances(dtype)
    scale = max(1.0, float(np.max(np.abs(desired))) if np.size(desired) else 1.0)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol * scale, err_msg=what)


@contextlib.contextmanager
def isa(name):
    old = rc.get_isa()
    _select_isa(name)
    try:
        yield
    finally:
        _select_isa(old)


@contextlib.contextmanager
def threads(n, force_team=True):
    """n threads; force_team makes even tiny steps use the whole team."""
    old_n, old_w, old_b = rc.get_num_threads(), _core.min_work_per_thread(), _core.team_backoff()
    rc.set_num_threads(n)
    if force_team:  # and a busy machine must not take the team away
        _core.set_min_work_per_thread(1)
        _core.set_team_backoff(False)
    try:
        yield
    finally:
        rc.set_num_threads(old_n)
        _core.set_min_work_per_thread(old_w)
        _core.set_team_backoff(old_b)
