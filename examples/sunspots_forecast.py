"""Time-series forecasting: next year's sunspot number from the past 20 years.

The yearly sunspot numbers 1700-2008 of ``statsmodels.api.datasets.sunspots``
(309 values, bundled with statsmodels, no download) are standardised with the
training years' mean and standard deviation and cut into sliding windows:
the past W years (default 20, long enough to hold two ~11-year solar cycles)
are a sequence of W steps of 1 feature, and the target is the next year.
The split is chronological: the last 20% of the targets are the test years,
the 10% before them the validation years (``validation_data``; early stopping
on its loss restores the best epoch), the rest the training years. The model
is an LSTM read at its last step by a linear layer, trained with MSE:

    rc.Sequential(rc.LSTM(1, 32), rc.Linear(32, 1))   # readout="last"

The script prints the test RMSE in sunspot units next to three baselines on
the same test years: the naive forecast (this year's value again), the
seasonal naive forecast (the value one 11-year solar cycle before the target
year) and a linear autoregression AR(W) fitted by least squares on the same
training windows. With matplotlib installed it also saves a plot of the test
years (``--plot``; skipped silently without matplotlib).

Run it from the repository root, after ``pip install ".[examples]"``:

    python examples/sunspots_forecast.py

or, with rnncore built in the source tree and the extras installed:

    PYTHONPATH=src/python python examples/sunspots_forecast.py

With options (all are listed by ``--help``):
    python examples/sunspots_forecast.py --epochs 300 --window 30 --seed 1 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

CYCLE = 11  # years: the mean length of the solar (Schwabe) cycle


def load_series():
    """Years (n,) and yearly sunspot numbers (n,) as float64 arrays."""
    try:
        import statsmodels.api as sm
    except ImportError:
        sys.exit("this example needs statsmodels: pip install \"rnncore[examples]\" "
                 "(or pip install statsmodels)")
    df = sm.datasets.sunspots.load_pandas().data
    return df["YEAR"].to_numpy(np.float64), df["SUNACTIVITY"].to_numpy(np.float64)


def windows(z: np.ndarray, W: int):
    """Sliding windows without a Python loop over time: X (n-W, W, 1), the
    W values before each target, and y (n-W, 1), the target."""
    X = np.lib.stride_tricks.sliding_window_view(z[:-1], W)[..., None]
    return np.ascontiguousarray(X), z[W:, None].copy()


def rmse(pred, target) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred).ravel() - np.asarray(target).ravel()) ** 2)))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150,
                   help="maximum training epochs; early stopping may end sooner (default 150)")
    p.add_argument("--window", type=int, default=20, help=f"years of history per forecast, >= {CYCLE} (default 20)")
    p.add_argument("--hidden", type=int, default=32, help="LSTM hidden units (default 32)")
    p.add_argument("--batch-size", type=int, default=16, help="minibatch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    p.add_argument("--patience", type=int, default=30,
                   help="early-stopping patience in epochs on val_loss (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and shuffling")
    p.add_argument("--threads", type=int, default=None,
                   help="rnncore threads (default: rnncore's choice; -1 all cores)")
    p.add_argument("--plot", default="sunspots_forecast.png", metavar="PATH",
                   help="where to save a plot of the test years if matplotlib is installed "
                        "(default sunspots_forecast.png; '' for none)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress bars")
    args = p.parse_args(argv)
    if args.window < CYCLE:
        p.error(f"--window must be >= {CYCLE} (the seasonal baseline looks {CYCLE} years back)")

    import rnncore as rc

    if args.threads is not None:
        rc.set_num_threads(args.threads)

    years, s = load_series()
    W = args.window
    n = len(s) - W                       # number of (window, next year) samples
    n_test = int(round(0.2 * n))
    n_val = int(round(0.1 * n))
    n_train = n - n_test - n_val

    # Scale with statistics of the years the training windows see only.
    seen = s[:n_train + W]
    mu, sd = seen.mean(), seen.std()
    X, y = windows(((s - mu) / sd).astype(np.float32), W)
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, n)
    target_years = years[W:]
    print(f"sunspots {int(years[0])}-{int(years[-1])}: windows of {W} years; "
          f"train {n_train} (targets {int(target_years[tr][0])}-{int(target_years[tr][-1])}), "
          f"val {n_val}, test {n_test} (targets {int(target_years[te][0])}-{int(target_years[te][-1])})")

    model = rc.Sequential(rc.LSTM(1, args.hidden, seed=args.seed),
                          rc.Linear(args.hidden, 1, seed=args.seed))
    stop = rc.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best=True)
    t0 = time.perf_counter()
    hist = model.fit(X[tr], y[tr], loss="mse", optimizer=rc.optim.Adam(lr=args.lr),
                     epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     clip_norm=1.0, validation_data=(X[va], y[va]), callbacks=[stop],
                     progress=not args.quiet)
    seconds = time.perf_counter() - t0
    best = int(np.argmin(hist["val_loss"])) + 1 if hist.epochs else 0
    print(f"trained {hist.epochs} epochs in {seconds:.1f} s (best val_loss at epoch {best})")

    # Forecasts and baselines on the test years, in sunspot units.
    truth = s[W:][te]
    lstm = model.predict(X[te]).ravel() * sd + mu
    naive = s[W - 1:-1][te]                               # this year's value
    seasonal = s[W - CYCLE:len(s) - CYCLE][te]            # the value one cycle before the target
    A = np.hstack([X[tr, :, 0], np.ones((n_train, 1), np.float32)]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, y[tr, 0].astype(np.float64), rcond=None)
    ar = (np.hstack([X[te, :, 0], np.ones((n_test, 1))]) @ coef) * sd + mu

    scores = {"lstm": rmse(lstm, truth), "naive": rmse(naive, truth),
              "seasonal": rmse(seasonal, truth), "ar": rmse(ar, truth)}
    print(f"test RMSE in sunspot units ({n_test} forecasts; std of the test years {truth.std():.1f}):")
    labels = {"lstm": f"LSTM({args.hidden}) + Linear", "naive": "naive (last value)",
              "seasonal": f"seasonal naive ({CYCLE} years back)",
              "ar": f"linear AR({W}), least squares"}
    for key, label in labels.items():
        print(f"  {label:<32} RMSE {scores[key]:7.2f}")

    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            pass
        else:
            fig, ax = plt.subplots(figsize=(9, 4))
            ty = target_years[te]
            ax.plot(ty, truth, "k-", lw=2, label="observed")
            ax.plot(ty, lstm, "-", label=f"LSTM (RMSE {scores['lstm']:.1f})")
            ax.plot(ty, ar, "--", label=f"AR({W}) (RMSE {scores['ar']:.1f})")
            ax.plot(ty, naive, ":", label=f"naive (RMSE {scores['naive']:.1f})")
            ax.set_xlabel("year")
            ax.set_ylabel("sunspot number")
            ax.set_title("One-year-ahead sunspot forecasts on the test years")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.plot, dpi=100)
            plt.close(fig)
            print(f"saved plot to {args.plot}")

    scores["seconds"] = seconds
    return scores


if __name__ == "__main__":
    main()
