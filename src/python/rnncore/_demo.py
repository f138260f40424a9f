"""``python -m rnncore demo``: which cells learn a long-term dependency?

Every cell kind is trained on the adding problem (Hochreiter & Schmidhuber
1997) at T=100: each sample is T steps of (value, marker), two steps are
marked, and the target is the sum of their two values. Predicting the mean
gives a test MSE of about 0.167; a cell that bridges the ~50-step lag between
the marks and the end drives it towards 0.

Before and after training it also measures how the gradient of the loss
flows back through time in each cell (``rnncore.diagnostics.gradient_flow``
on 100 test samples), prints the lag at which ``||dL/dh_t||`` falls below
1e-3 of its last-step value, and, with matplotlib installed, saves the curves
of the Elman, leaky, skip and LSTM cells to ``gradient_flow.png`` (``--plot``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .module import registered

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
    """(label, make(seed)) of every run the registered layers ask for, in their order."""
    runs = []
    for cls in registered().values():
        if "_demo_runs" not in vars(cls):  # a class's own runs, not its base's
            continue
        for order, label, kw in cls._demo_runs(hidden):
            runs.append((order, label, lambda s, cls=cls, kw=kw: cls(2, hidden, seed=s, **kw)))
    return [(label, make) for _, label, make in sorted(runs, key=lambda r: r[0])]


def train_cell(make, *, steps=100, hidden=64, n_train=10000, n_test=1000, epochs=20,
               budget=60.0, batch_size=50, lr=1e-2, seed=0, progress=True, target=0.01,
               inspect=None):
    """Train one cell; stop at ``epochs``, when the test MSE falls below
    ``target``, or when ``budget`` seconds have passed. Returns (mse, seconds, epochs).

    ``inspect(stage, model, X_test, Y_test)``, if given, is called with stage
    ``"init"`` before training and ``"trained"`` after it (outside the budget)."""
    from . import Linear, Sequential, optim
    rng = np.random.default_rng(seed)
    X, Y = adding_problem(n_train, steps, rng)
    Xt, Yt = adding_problem(n_test, steps, rng)
    model = Sequential(make(seed), Linear(hidden, 1, seed=seed))
    opt = optim.Adam(lr=lr)
    if inspect is not None:
        inspect("init", model, Xt, Yt)
    t0 = time.perf_counter()
    mse, done = float("nan"), 0
    for epoch in range(epochs):
        model.fit(X, Y, loss="mse", optimizer=opt, epochs=epoch + 1, initial_epoch=epoch,
                  batch_size=batch_size, seed=seed, clip_norm=1.0, progress=progress)
        mse = model.evaluate(Xt, Yt, loss="mse")
        done = epoch + 1
        if mse < target or time.perf_counter() - t0 > budget:
            break
    secs = time.perf_counter() - t0
    if inspect is not None:
        inspect("trained", model, Xt, Yt)
    return mse, secs, done


# the cells drawn in gradient_flow.png (all are measured and printed)
_PLOTTED = ("Elman", "leaky", "skip", "LSTM")
_FLOW_SAMPLES = 100
_RATIO = 1e-3


def _flow_inspector(flows: dict, name: str):
    """An ``inspect`` for train_cell: stores the gradient flow of the model's
    recurrent layer under flows[stage][name]."""
    from .diagnostics import gradient_flow

    def inspect(stage, model, Xt, Yt):
        n = min(_FLOW_SAMPLES, len(Xt))
        flow = gradient_flow(model, Xt[:n], Yt[:n], loss="mse")
        flows.setdefault(stage, {})[name] = next(iter(flow.values()))
    return inspect


def _lag_str(norms) -> str:
    """"first / for good": decay_lag without and with sustained=True."""
    from .diagnostics import decay_lag
    if not (np.isfinite(norms[-1]) and norms[-1] > 0):
        return "n/a"
    out = []
    for sustained in (False, True):
        lag = decay_lag(norms, _RATIO, sustained=sustained)
        out.append(f">{len(norms) - 1}" if lag is None else str(lag))
    return " / ".join(out)


def _plot_flows(flows: dict, path: str, steps: int) -> None:
    try:
        from .diagnostics import _has_display, _new_figure, decay_lag, plot_gradient_flow
        fig, axes = _new_figure(2, figsize=(13.0, 4.8), headless=not _has_display())
    except ImportError:
        print(f"\n(matplotlib is not installed: no {path}; pip install 'rnncore[plot]' to get it)")
        return
    for ax, stage, title in zip(axes, ("init", "trained"), ("at initialisation", "after training")):
        curves = {}
        for name, v in flows.get(stage, {}).items():
            if any(name.startswith(p) for p in _PLOTTED):
                lag = decay_lag(v, _RATIO, sustained=True) if np.isfinite(v[-1]) and v[-1] > 0 else None
                curves[f"{name}: {'>' + str(steps - 1) if lag is None else lag}"] = v
        plot_gradient_flow(curves, ax=ax, title=title, normalize=True, threshold=_RATIO)
        ax.set_ylim(1e-20, 5.0)  # below 1e-20 of the last step's gradient nothing is left
        ax.legend(fontsize="small", loc="center right", title="lag below 1e-3 for good",
                  title_fontsize="small")
    fig.suptitle(f"Gradient flow back through time on the adding problem, T={steps} "
                 f"({_FLOW_SAMPLES} test samples, mse loss)")
    fig.savefig(path, dpi=80)
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt
        plt.close(fig)
    print(f"\nwrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnncore demo", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--epochs", type=int, default=20, help="most epochs per cell (default 20)")
    p.add_argument("--budget", type=float, default=45.0, help="seconds per cell (default 45)")
    p.add_argument("--train", type=int, default=10000, help="training samples (default 10000)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plot", default="gradient_flow.png", metavar="PATH",
                   help="where to save the gradient-flow figure if matplotlib is installed "
                        "(default gradient_flow.png; '' for none)")
    a = p.parse_args(argv)
    print(f"Adding problem, T={a.steps}, {a.train} training samples; predicting the mean gives MSE ~ 0.167.")
    rows, flows = [], {}
    for name, make in _cells(a.hidden):
        print(f"\n{name}")
        mse, secs, ep = train_cell(make, steps=a.steps, hidden=a.hidden, n_train=a.train,
                                   epochs=a.epochs, budget=a.budget, progress=not a.quiet,
                                   inspect=_flow_inspector(flows, name))
        rows.append((name, mse, secs, ep))
    print(f"\n{'cell':<24} {'test MSE':>9} {'epochs':>7} {'time':>8}  learnt the dependency")
    for name, mse, secs, ep in rows:
        verdict = "yes" if mse < 0.01 else ("partly" if mse < 0.1 else "no")
        print(f"{name:<24} {mse:9.4f} {ep:7d} {secs:7.1f}s  {verdict}")
    print(f"\nGradient flow ({_FLOW_SAMPLES} test samples, mse loss): the lag at which ||dL/dh_t|| "
          f"falls below {_RATIO:g} of its last-step value,\nfirst / for good (rnncore.diagnostics."
          f"decay_lag; >{a.steps - 1}: not within the sequence)")
    print(f"{'cell':<24} {'at init':>11} {'trained':>11}")
    for name, *_ in rows:
        print(f"{name:<24} {_lag_str(flows['init'][name]):>11} {_lag_str(flows['trained'][name]):>11}")
    if a.plot:
        _plot_flows(flows, a.plot, a.steps)
    return 0
