"""Feed-forward building blocks for :class:`rnncore.Sequential`: a linear map
and dropout, with the same ``params``/``grads``/``forward``/``backward``
protocol as the recurrent layers.

Letters: N samples, T time steps, F features.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._checks import as_real_array, check_dtype, check_int, shape_str
from .module import Module
from .runtime import get_num_threads

__all__ = ["Linear", "Dropout"]


class Linear(Module):
    """``y = x W^T + b`` over the last axis, as ``torch.nn.Linear``.

    Parameters are ``weight`` (out_features, in_features) and ``bias``
    (out_features,), initialised U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, *, bias=True, dtype=np.float32, seed=None):
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.bias = bool(bias)
        self.dtype = check_dtype(dtype)
        if seed is not None:
            check_int("seed", seed, 0)
        self.seed = seed
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self.params = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(self.dtype)}
        if self.bias:
            self.params["bias"] = rng.uniform(-bound, bound, self.out_features).astype(self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": self.dtype.name, "seed": self.seed}

    def _check(self, x):
        x = as_real_array("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must be (..., {self.in_features}), got {shape_str(x.shape)}")
        return x

    def _gemm(self, ta, tb, a, b, beta, c):
        # rnncore's products, not numpy's: numpy's BLAS threads would spin
        # beside rnncore's team (see runtime.py)
        f = _core.gemm_f32 if self.dtype == np.float32 else _core.gemm_f64
        f(ta, tb, 1.0, a, b, beta, c, get_num_threads())
        return c

    def _param(self, name):
        p = self.params[name]
        if p.dtype != self.dtype or not p.flags.c_contiguous:
            p = np.ascontiguousarray(p, dtype=self.dtype)
        return p

    def __call__(self, x):
        x = self._check(x)
        x2 = x.reshape(-1, self.in_features)
        y = np.empty((x2.shape[0], self.out_features), self.dtype)
        if self.bias:
            y[...] = self._param("bias")
        self._gemm(False, True, x2, self._param("weight"), 1.0 if self.bias else 0.0, y)
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def forward(self, x):
        """``(y, tape)``; x (..., in_features) -> y (..., out_features)."""
        x = self._check(x)
        return self(x), x

    def backward(self, tape, dy):
        """dx; adds dW = dy^T x and db = sum(dy) into ``grads``."""
        x = tape
        dy = as_real_array("dy", dy, self.dtype)
        if dy.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(f"dy must be {shape_str(x.shape[:-1] + (self.out_features,))}, "
                             f"got {shape_str(dy.shape)}")
        x2, dy2 = x.reshape(-1, self.in_features), dy.reshape(-1, self.out_features)
        gw = self.grads["weight"]
        if gw.shape != self.params["weight"].shape or gw.dtype != self.dtype or not gw.flags.c_contiguous:
            raise ValueError(f"grads['weight'] must be a C-contiguous {self.dtype} array "
                             f"{shape_str(self.params['weight'].shape)}")
        self._gemm(True, False, dy2, x2, 1.0, gw)
        if self.bias:
            self.grads["bias"] += dy2.sum(axis=0)
        dx = np.empty((dy2.shape[0], self.in_features), self.dtype)
        self._gemm(False, False, dy2, self._param("weight"), 0.0, dx)
        return dx.reshape(x.shape)

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias})"


class Dropout(Module):
    """Inverted dropout with drop probability ``p`` in :meth:`forward` in
    training mode (see :meth:`train`); identity in eval mode and inference."""

    def __init__(self, p=0.5, *, seed=None):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)):
            raise TypeError(f"p must be a float in [0, 1), got {type(p).__name__}")
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = float(p)
        if seed is not None:
            check_int("seed", seed, 0)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.params, self.grads = {}, {}

    def get_config(self) -> dict:
        return {"p": self.p, "seed": self.seed}

    def __call__(self, x):
        return x

    def forward(self, x):
        """``(y, mask)``: x times a fresh inverted-dropout mask in training
        mode; x itself (and no mask) in eval mode or with p = 0."""
        if self.p == 0.0 or not self.training:
            return x, None
        keep = 1.0 - self.p
        mask = (self._rng.random(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * mask, mask

    def backward(self, tape, dy):
        return dy if tape is None else dy * tape

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
