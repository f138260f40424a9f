"""The adding problem (T=100) with one recipe in rnncore and in PyTorch:
wall time until the test MSE falls below 0.01.

Recipe: LSTM(2, 64) + Linear(64, 1) on the last step, MSE, Adam(lr=1e-2),
batch 50, gradient clipping at global norm 1, 10,000 training and 1,000 test
samples (the same arrays on both sides), the test MSE checked after each
epoch. Same thread count on both sides.

    python benchmarks/adding_problem.py [--threads N] [--cell lstm|gru] [--max-epochs 30]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import rnncore as rc
from rnncore._demo import adding_problem


def run_rnncore(cell, X, Y, Xt, Yt, hidden, max_epochs, target, seed):
    layer = {"lstm": rc.LSTM, "gru": rc.GRU}[cell](2, hidden, seed=seed)
    model = rc.Sequential(layer, rc.Linear(hidden, 1, seed=seed))
    opt = rc.optim.Adam(lr=1e-2)
    t0 = time.perf_counter()
    for epoch in range(max_epochs):
        model.fit(X, Y, loss="mse", optimizer=opt, epochs=epoch + 1, initial_epoch=epoch,
                  batch_size=50, seed=seed, clip_norm=1.0, progress=False)
        mse = model.evaluate(Xt, Yt)
        if mse < target:
            break
    return time.perf_counter() - t0, epoch + 1, mse


def run_torch(cell, X, Y, Xt, Yt, hidden, max_epochs, target, seed):
    import torch
    torch.manual_seed(seed)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](2, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    Xtt, Ytt = torch.from_numpy(X), torch.from_numpy(Y)
    Xte, Yte = torch.from_numpy(Xt), torch.from_numpy(Yt)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for epoch in range(max_epochs):
        order = torch.from_numpy(rng.permutation(len(X)))
        for i in range(0, len(X), 50):
            idx = order[i:i + 50]
            opt.zero_grad()
            out, _ = rnn(Xtt[idx])
            loss = torch.mean((head(out[:, -1]) - Ytt[idx]) ** 2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        with torch.no_grad():
            out, _ = rnn(Xte)
            mse = float(torch.mean((head(out[:, -1]) - Yte) ** 2))
        if mse < target:
            break
    return time.perf_counter() - t0, epoch + 1, mse


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--target", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch
    rc.set_num_threads(a.threads)
    torch.set_num_threads(rc.get_num_threads())
    rng = np.random.default_rng(a.seed)
    X, Y = adding_problem(10000, a.steps, rng)
    Xt, Yt = adding_problem(1000, a.steps, rng)
    print(f"adding problem T={a.steps}, {a.cell.upper()}({a.hidden}), threads {rc.get_num_threads()}, "
          f"target test MSE < {a.target}")
    for name, fn in (("rnncore", run_rnncore), ("pytorch", run_torch)):
        secs, epochs, mse = fn(a.cell, X, Y, Xt, Yt, a.hidden, a.max_epochs, a.target, a.seed)
        print(f"{name:8s} {secs:8.1f} s  {epochs:3d} epochs  {secs / epochs:6.2f} s/epoch  test MSE {mse:.4f}")


if __name__ == "__main__":
    main()
