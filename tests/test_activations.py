"""The kernels' tanh, checked value by value on every instruction set.

An Elman cell with W_ih = identity and no recurrence or bias outputs tanh(x)
for each input lane (the products add exact zeros), so the vectorised tanh
of each ISA can be compared with numpy's over a dense grid: all of [-12, 12]
at a fine step, the places where the approximations change form (0.625 for
the exp form near 0, 9 where the rational form clamps), tiny and subnormal
inputs, and large ones.
"""
from __future__ import annotations

import numpy as np
import pytest

import rnncore as rc

from _helpers import isa

ISAS = rc.available_isas()
WIDTH = 64  # lanes per row: several vector blocks on every ISA


def _grid(dtype):
    tiny = np.finfo(dtype).tiny
    special = [0.0, tiny, tiny / 8, np.finfo(dtype).smallest_subnormal, 1e-30, 1e-8, 1e-4,
               0.625, 8.999, 9.0, 9.001, 15.0, 40.0, 1e4, 1e30]
    x = np.concatenate([np.linspace(-12, 12, 120_001), special, -np.asarray(special)])
    for c in (0.625, 9.0):  # both sides of each switch, by a few ulps
        x = np.concatenate([x, c + np.arange(-4, 5) * np.spacing(dtype(c)),
                            -c - np.arange(-4, 5) * np.spacing(dtype(c))])
    return x.astype(dtype)


def _kernel_tanh(x, dtype):
    """tanh(x) through rc.RNN: one step, W_ih = I, W_hh = 0, no bias."""
    n = -(-x.size // WIDTH) * WIDTH
    padded = np.zeros(n, dtype)
    padded[:x.size] = x
    layer = rc.RNN(WIDTH, WIDTH, dtype=dtype, bias=False)
    layer.params["weight_ih_l0"][...] = np.eye(WIDTH, dtype=dtype)
    layer.params["weight_hh_l0"][...] = 0
    y, _ = layer(padded.reshape(1, -1, WIDTH))
    return y.reshape(-1)[:x.size]


def _ulps(actual, exact, dtype):
    """|actual - exact| in units of the last place of the exact value in dtype."""
    fi = np.finfo(dtype)
    mag = np.maximum(np.abs(exact), fi.tiny)
    ulp = np.exp2(np.floor(np.log2(mag)) - fi.nmant)
    return np.abs(actual.astype(np.float64) - exact) / ulp


# float32 lanes use a rational approximation (tanh_rational.hpp): at most 7
# ulp over every float, measured exhaustively when it was written; float64
# lanes use exp-based forms (a few ulp); the generic path calls std::tanh.
BOUND = {np.float32: 8.0, np.float64: 8.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ISAS)
def test_tanh_lanes_match_numpy_within_a_few_ulp(name, dtype):
    x = _grid(dtype)
    with isa(name):
        y = _kernel_tanh(x, dtype)
    exact = np.tanh(x.astype(np.longdouble)).astype(np.float64)
    err = _ulps(y, exact, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= BOUND[dtype], (
        f"{name} {np.dtype(dtype).name}: tanh({x[worst]!r}) = {y[worst]!r}, "
        f"numpy {exact[worst]!r}: {err[worst]:.2f} ulp")
    assert np.all(np.abs(y) <= 1), "a tanh lane left [-1, 1]"
    nz = x != 0  # (the product turns -0 into +0 before tanh)
    assert np.array_equal(np.signbit(y[nz]), np.signbit(x[nz])), "tanh changed a sign"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ISAS)
def test_tanh_is_odd_lane_for_lane(name, dtype):
    x = np.concatenate([np.linspace(0, 30, 30_001), [1e-30, 1e30]]).astype(dtype)
    with isa(name):
        y = _kernel_tanh(x, dtype)
        y_neg = _kernel_tanh(-x, dtype)
    np.testing.assert_array_equal(y_neg, -y)
