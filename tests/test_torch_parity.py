"""Parity with torch.nn.LSTM / GRU / RNN: outputs, final states and every gradient.

Optional: skipped when PyTorch is not installed. The rnncore layer's weights are
copied into the torch module by name (both use PyTorch's names and layouts);
torch then serves as the reference for forward and BPTT, including packed
sequences (`lengths`), bidirectional and stacked layers.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnncore as rc  # noqa: E402

from _helpers import TORCH_CELL_IDS  # noqa: E402

# T = time steps, B = batch, I = input size, H = hidden size.
T, B, I, H = 7, 3, 5, 17
LENGTHS = np.array([4, 7, 1])  # unsorted, includes T and 1

CELLS = TORCH_CELL_IDS
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}


def _rc_layer(cell, input_size, hidden_size, dtype, **kwargs):
    if cell == "lstm":
        return rc.LSTM(input_size, hidden_size, dtype=dtype, seed=0, peephole=False, **kwargs)
    if cell == "gru":
        return rc.GRU(input_size, hidden_size, dtype=dtype, seed=0, reset_after=True, **kwargs)
    if not hasattr(rc, "RNN"):
        pytest.skip("rnncore has no RNN layer yet")
    nonlinearity = cell.split("_")[1]
    return rc.RNN(input_size, hidden_size, dtype=dtype, seed=0, nonlinearity=nonlinearity, **kwargs)


def _torch_module(cell, input_size, hidden_size, dtype, **kwargs):
    if cell == "lstm":
        module = torch.nn.LSTM(input_size, hidden_size, **kwargs)
    elif cell == "gru":
        module = torch.nn.GRU(input_size, hidden_size, **kwargs)
    else:
        module = torch.nn.RNN(input_size, hidden_size, nonlinearity=cell.split("_")[1], **kwargs)
    return module.double() if dtype == np.float64 else module


def make_pair(cell, dtype, *, input_size=I, hidden_size=H, num_layers=1, bidirectional=False,
              batch_first=False, seed=0):
    """rnncore layer and torch module with the same (random, non-default) weights."""
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    layer = _rc_layer(cell, input_size, hidden_size, dtype, **kwargs)
    module = _torch_module(cell, input_size, hidden_size, dtype, **kwargs)

    torch_names = {name for name, _ in module.named_parameters()}
    assert set(layer.params) == torch_names
    # Overwrite rnncore's initialisation in place (params are writable) so that
    # every bias and weight is random and nonzero, then copy into torch.
    rng = np.random.default_rng(seed)
    for name, p in module.named_parameters():
        value = layer.params[name]
        assert value.shape == tuple(p.shape), name
        assert value.dtype == dtype, name
        value[...] = rng.uniform(-0.4, 0.4, size=value.shape)
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.array(value)))
    layer.zero_grad()
    return layer, module


def _seq_shape(batch_first, steps, batch, features):
    return (batch, steps, features) if batch_first else (steps, batch, features)


def _random_state(cell, rng, shape, dtype):
    if cell == "lstm":
        return tuple(rng.standard_normal(shape).astype(dtype) for _ in range(2))
    return rng.standard_normal(shape).astype(dtype)


def _as_tuple(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def run_torch(cell, module, x, state, lengths, dy, dstate, batch_first):
    """Forward and backward in torch; returns y, final state, dx, d(initial state), grads."""
    n_state = 2 if cell == "lstm" else 1
    steps = x.shape[1] if batch_first else x.shape[0]
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    # An explicit zero state stands in for state=None so its gradient exists.
    state_t = tuple(torch.from_numpy(np.array(s)).requires_grad_(True) for s in state)
    hx = state_t if cell == "lstm" else state_t[0]

    module.zero_grad()
    if lengths is None:
        y_t, hn = module(x_t, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.as_tensor(lengths, dtype=torch.int64), batch_first=batch_first,
            enforce_sorted=False)
        out, hn = module(packed, hx)
        y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                        total_length=steps)
    hn = _as_tuple(hn)
    assert len(hn) == n_state

    loss = (y_t * torch.from_numpy(dy)).sum()
    if dstate is not None:
        for h, dh in zip(hn, dstate):
            loss = loss + (h * torch.from_numpy(np.array(dh))).sum()
    loss.backward()

    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters()}
    return (y_t.detach().numpy(), tuple(h.detach().numpy() for h in hn), x_t.grad.numpy(),
            tuple(s.grad.numpy() for s in state_t), grads)


def assert_close(actual, expected, dtype, what):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    tol = dict(TOL[dtype])
    # Sums over T*B terms: scale the absolute floor with the reference's size.
    tol["atol"] *= max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, err_msg=what, **tol)


def check_parity(cell, dtype, *, steps=T, batch=B, input_size=I, hidden_size=H, num_layers=1,
                 bidirectional=False, batch_first=False, lengths=None, with_state=False,
                 with_dstate=True, seed=0):
    layer, module = make_pair(cell, dtype, input_size=input_size, hidden_size=hidden_size,
                              num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first, seed=seed)
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal(_seq_shape(batch_first, steps, batch, input_size)).astype(dtype)
    # dy is random past each row's length too: y is constant 0 there, so it must be ignored.
    dy = rng.standard_normal(_seq_shape(batch_first, steps, batch, D * hidden_size)).astype(dtype)
    state_shape = (num_layers * D, batch, hidden_size)
    state = _random_state(cell, rng, state_shape, dtype) if with_state else None
    dstate = _random_state(cell, rng, state_shape, dtype) if with_dstate else None

    zero_state = tuple(np.zeros(state_shape, dtype) for _ in range(2 if cell == "lstm" else 1))
    y_ref, hn_ref, dx_ref, dstate_ref, grads_ref = run_torch(
        cell, module, x, _as_tuple(state) if with_state else zero_state, lengths, dy,
        None if dstate is None else _as_tuple(dstate), batch_first)

    # Inference call.
    y_inf, st_inf = layer(x, state=state, lengths=lengths)
    assert_close(y_inf, y_ref, dtype, "y (inference)")
    for k, (a, e) in enumerate(zip(_as_tuple(st_inf), hn_ref)):
        assert_close(a, e, dtype, f"final state[{k}] (inference)")

    # Training call.
    y, st, tape = layer.forward(x, state=state, lengths=lengths)
    assert_close(y, y_ref, dtype, "y")
    assert len(_as_tuple(st)) == len(hn_ref)
    for k, (a, e) in enumerate(zip(_as_tuple(st), hn_ref)):
        assert_close(a, e, dtype, f"final state[{k}]")
    if lengths is not None:
        mask = np.arange(steps)[:, None] >= np.asarray(lengths)[None, :]  # (T, B)
        y_tb = np.asarray(y).swapaxes(0, 1) if batch_first else np.asarray(y)
        assert not np.any(y_tb[mask]), "y must be 0 past each row's length"

    dx, dst = layer.backward(tape, dy, dstate=dstate)
    assert_close(dx, dx_ref, dtype, "dx")
    assert dst is not None, "backward must return d(initial state), also for state=None"
    assert len(_as_tuple(dst)) == len(dstate_ref)
    for k, (a, e) in enumerate(zip(_as_tuple(dst), dstate_ref)):
        assert_close(a, e, dtype, f"d(initial state)[{k}]")
    assert set(layer.grads) == set(grads_ref)
    for name, g in grads_ref.items():
        assert_close(layer.grads[name], g, dtype, f"grad {name}")


@pytest.mark.parametrize("with_state", [False, True], ids=["state0", "state"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_parity(cell, dtype, num_layers, bidirectional, batch_first, use_lengths, with_state):
    check_parity(cell, dtype, num_layers=num_layers, bidirectional=bidirectional,
                 batch_first=batch_first, lengths=LENGTHS if use_lengths else None,
                 with_state=with_state)


@pytest.mark.parametrize("size", [(1, 1, 1, 1), (2, 1, 3, 5), (5, 4, 2, 64)],
                         ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_parity_awkward_sizes(cell, size):
    steps, batch, input_size, hidden_size = size
    lengths = np.arange(batch) % steps + 1  # valid lengths in [1, T], unsorted for B > T
    check_parity(cell, np.float64, steps=steps, batch=batch, input_size=input_size,
                 hidden_size=hidden_size, num_layers=2, bidirectional=True, lengths=lengths,
                 with_state=True)


@pytest.mark.parametrize("cell", CELLS)
def test_parity_without_dstate(cell):
    # dstate=None means no gradient flows in through the final state.
    check_parity(cell, np.float64, num_layers=2, bidirectional=True, lengths=LENGTHS,
                 with_state=True, with_dstate=False)

