"""The adding problem (T=100) with one recipe in rnncore and in PyTorch:
wall time until the test MSE falls below 0.01, and time per epoch.

Recipe: LSTM(2, 64) + Linear(64, 1) on the last step, MSE, Adam(lr=1e-2),
batch 50, gradient clipping at global norm 1, 10,000 training and 1,000 test
samples (the same arrays on both sides), the test MSE checked after each
epoch. Same thread count on both sides.

The two sides take turns epoch by epoch in one process (rnncore's epoch,
PyTorch's epoch, ...), so that a machine that slows down for a while slows
both; each side stops at the target MSE (or --max-epochs), and the other
goes on alone. Reported: each side's time to the target (the sum of its
epochs, test evaluation included), its epochs, its median time per epoch,
and the ratios PyTorch / rnncore of both.

    python benchmarks/adding_problem.py [--threads N] [--cell lstm|gru] [--max-epochs 30]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import rnncore as rc
from rnncore._demo import adding_problem


def rnncore_epochs(cell, X, Y, Xt, Yt, hidden, seed):
    """Yields (seconds, test MSE) per epoch."""
    layer = {"lstm": rc.LSTM, "gru": rc.GRU}[cell](2, hidden, seed=seed)
    model = rc.Sequential(layer, rc.Linear(hidden, 1, seed=seed))
    opt = rc.optim.Adam(lr=1e-2)
    epoch = 0
    while True:
        t0 = time.perf_counter()
        model.fit(X, Y, loss="mse", optimizer=opt, epochs=epoch + 1, initial_epoch=epoch,
                  batch_size=50, seed=seed, clip_norm=1.0, progress=False)
        mse = model.evaluate(Xt, Yt)
        yield time.perf_counter() - t0, mse
        epoch += 1


def torch_epochs(cell, X, Y, Xt, Yt, hidden, seed):
    """Yields (seconds, test MSE) per epoch."""
    import torch
    torch.manual_seed(seed)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](2, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    Xtt, Ytt = torch.from_numpy(X), torch.from_numpy(Y)
    Xte, Yte = torch.from_numpy(Xt), torch.from_numpy(Yt)
    rng = np.random.default_rng(seed)
    while True:
        t0 = time.perf_counter()
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
        yield time.perf_counter() - t0, mse


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
          f"target test MSE < {a.target}; the sides take turns epoch by epoch")
    sides = {"rnncore": rnncore_epochs(a.cell, X, Y, Xt, Yt, a.hidden, a.seed),
             "pytorch": torch_epochs(a.cell, X, Y, Xt, Yt, a.hidden, a.seed)}
    runs = {name: {"secs": [], "mse": None, "done": False} for name in sides}
    for _ in range(a.max_epochs):
        for name, gen in sides.items():
            r = runs[name]
            if r["done"]:
                continue
            secs, r["mse"] = next(gen)
            r["secs"].append(secs)
            r["done"] = r["mse"] < a.target
        if all(r["done"] for r in runs.values()):
            break
    for name, r in runs.items():
        s = r["secs"]
        print(f"{name:8s} {sum(s):8.1f} s  {len(s):3d} epochs  {np.median(s):6.2f} s/epoch (median)  "
              f"test MSE {r['mse']:.4f}{'' if r['done'] else '  (target not reached)'}")
    rc_s, pt_s = runs["rnncore"]["secs"], runs["pytorch"]["secs"]
    print(f"pytorch / rnncore: {sum(pt_s) / sum(rc_s):.2f}x to the target, "
          f"{np.median(pt_s) / np.median(rc_s):.2f}x per epoch")


if __name__ == "__main__":
    main()
