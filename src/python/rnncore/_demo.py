"""``python -m rnncore demo``: which cells learn a long-term dependency?

Every cell kind is trained on the adding problem (Hochreiter & Schmidhuber
1997) at T=100: each sample is T steps of (value, marker), two steps are
marked, and the target is the sum of their two values. Predicting the mean
gives a test MSE of about 0.167; a cell that bridges the ~50-step lag between
the marks and the end drives it towards 0.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

__all__ = ["adding_problem", "main"]


def adding_problem(n: int, steps: int, rng: np.random.Generator, dtype=np.float32):
    """X (n, T, 2) and Y (n, 1): values in [0, 1), markers on one step in each
    half, target the sum of the two marked values."""
    x = np.zeros((n, steps, 2), dtype)
    x[:, :, 0] = rng.random((n, steps))
    rows = np.arange(n)
    first = rng.integers(0, steps // 2, n)
    second = rng.integers(steps // 2, steps, n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None]
    return x, y.astype(dtype)


def _cells(hidden: int):
    from . import GRU, LSTM, RNN, ClockworkRNN, LeakyRNN, SkipRNN
    return [
        ("Elman (tanh)", lambda s: RNN(2, hidden, seed=s)),
        ("leaky, tau 1..100", lambda s: LeakyRNN(2, hidden, timescales=(1, 100), seed=s)),
        ("skip, delays (1, 10)", lambda s: SkipRNN(2, hidden, delays=(1, 10), seed=s)),
        ("clockwork, 1..32", lambda s: ClockworkRNN(2, hidden, periods=(1, 2, 4, 8, 16, 32)
                                                    if hidden % 6 == 0 else (1, 2, 4, 8), seed=s)),
        ("GRU", lambda s: GRU(2, hidden, seed=s)),
        ("LSTM", lambda s: LSTM(2, hidden, seed=s)),
    ]


def train_cell(make, *, steps=100, hidden=64, n_train=10000, n_test=1000, epochs=20,
               budget=60.0, batch_size=50, lr=1e-2, seed=0, progress=True, target=0.01):
    """Train one cell; stop at ``epochs``, when the test MSE falls below
    ``target``, or when ``budget`` seconds have passed. Returns (mse, seconds, epochs)."""
    from . import Linear, Sequential, optim
    rng = np.random.default_rng(seed)
    X, Y = adding_problem(n_train, steps, rng)
    Xt, Yt = adding_problem(n_test, steps, rng)
    model = Sequential(make(seed), Linear(hidden, 1, seed=seed))
    opt = optim.Adam(lr=lr)
    t0 = time.perf_counter()
    mse, done = float("nan"), 0
    for epoch in range(epochs):
        model.fit(X, Y, loss="mse", optimizer=opt, epochs=epoch + 1, initial_epoch=epoch,
                  batch_size=batch_size, seed=seed, clip_norm=1.0, progress=progress)
        mse = model.evaluate(Xt, Yt, loss="mse")
        done = epoch + 1
        if mse < target or time.perf_counter() - t0 > budget:
            break
    return mse, time.perf_counter() - t0, done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnncore demo", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--epochs", type=int, default=20, help="most epochs per cell (default 20)")
    p.add_argument("--budget", type=float, default=45.0, help="seconds per cell (default 45)")
    p.add_argument("--train", type=int, default=10000, help="training samples (default 10000)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    print(f"Adding problem, T={a.steps}, {a.train} training samples; predicting the mean gives MSE ~ 0.167.")
    rows = []
    for name, make in _cells(a.hidden):
        print(f"\n{name}")
        mse, secs, ep = train_cell(make, steps=a.steps, hidden=a.hidden, n_train=a.train,
                                   epochs=a.epochs, budget=a.budget, progress=not a.quiet)
        rows.append((name, mse, secs, ep))
    print(f"\n{'cell':<24} {'test MSE':>9} {'epochs':>7} {'time':>8}  learnt the dependency")
    for name, mse, secs, ep in rows:
        verdict = "yes" if mse < 0.01 else ("partly" if mse < 0.1 else "no")
        print(f"{name:<24} {mse:9.4f} {ep:7d} {secs:7.1f}s  {verdict}")
    return 0
