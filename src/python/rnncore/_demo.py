"""``python -m rnncore demo``: train LSTM and GRU layers on the adding problem
(Hochreiter & Schmidhuber 1997) and print the loss falling.

Each sample is T steps of (value, marker); two steps are marked and the
target is the sum of their values. Predicting the mean gives MSE ~ 0.167.
"""
from __future__ import annotations

import time

import numpy as np

from . import GRU, LSTM


def adding_problem(n: int, steps: int, rng: np.random.Generator):
    """X (n, T, 2) and Y (n, 1): values in [0, 1), two markers, sum of the marked."""
    x = np.zeros((n, steps, 2), np.float32)
    x[:, :, 0] = rng.random((n, steps))
    first = rng.integers(0, steps // 2, n)
    second = rng.integers(steps // 2, steps, n)
    x[np.arange(n), first, 1] = 1.0
    x[np.arange(n), second, 1] = 1.0
    y = (x[np.arange(n), first, 0] + x[np.arange(n), second, 0])[:, None]
    return x, y


class _Adam:
    def __init__(self, params, lr):
        self.params, self.lr, self.t = params, lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads, b1=0.9, b2=0.999, eps=1e-8):
        self.t += 1
        for k, p in self.params.items():
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            mh = self.m[k] / (1 - b1 ** self.t)
            vh = self.v[k] / (1 - b2 ** self.t)
            p -= (self.lr * mh / (np.sqrt(vh) + eps)).astype(p.dtype)


def train(cls, steps=50, hidden=32, epochs=15, n_train=5000, batch=50, seed=0, log=print):
    rng = np.random.default_rng(seed)
    X, Y = adding_problem(n_train, steps, rng)
    Xt, Yt = adding_problem(500, steps, rng)
    layer = cls(2, hidden, batch_first=True, seed=seed)
    w = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    b = np.zeros(1, np.float32)
    params = dict(layer.params, readout_w=w, readout_b=b)
    opt = _Adam(params, 1e-2)

    def predict(x):
        y, _ = layer(x)
        return y[:, -1] @ w + b

    t0 = time.perf_counter()
    log(f"{cls.__name__}: T={steps}, H={hidden}; test MSE before training {np.mean((predict(Xt) - Yt) ** 2):.4f}")
    for epoch in range(epochs):
        order = rng.permutation(n_train)
        for i in range(0, n_train, batch):
            idx = order[i:i + batch]
            x, yt = X[idx], Y[idx]
            layer.zero_grad()
            y, _, tape = layer.forward(x)
            last = y[:, -1]
            err = last @ w + b - yt
            dpred = 2 * err / err.size
            grads = dict(layer.grads, readout_w=last.T @ dpred, readout_b=dpred.sum(0))
            dy = np.zeros_like(y)
            dy[:, -1] = dpred @ w.T
            layer.backward(tape, dy)
            opt.step(grads)
        mse = float(np.mean((predict(Xt) - Yt) ** 2))
        log(f"  epoch {epoch + 1:2d}  test MSE {mse:.4f}  ({time.perf_counter() - t0:.1f} s)")
    return mse


def main(argv=None) -> int:
    for cls in (LSTM, GRU):
        train(cls)
    return 0
